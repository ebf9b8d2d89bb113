"""Host and Origin checks: DNS rebinding and cross-site requests are refused with a 403 envelope."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from litestar import Litestar, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient

from modelyard.api.app import create_app
from modelyard.core.settings import Settings
from tests.conftest import BASE_URL, assert_error


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8000", "127.0.0.1", "localhost:8000", "localhost", "LOCALHOST:8000", "localhost.:8000", "[::1]:8000", "[::1]"],
)
def test_loopback_hosts_are_allowed(client, host: str) -> None:
    response = client.get("/api/system/health", headers={"host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "host",
    [
        "evil.com",
        "evil.com:8000",
        "localhost.evil.com",
        "127.0.0.1.nip.io:8000",
        "evil.com:8000@localhost",
        "[::2]:8000",
        "[::1]evil.com:8000",
        "[::1",
        "0.0.0.0:8000",
        "",
    ],
)
def test_other_hosts_are_refused_with_403_envelope(client, host: str) -> None:
    error = assert_error(client.get("/api/system/health", headers={"host": host}), 403, "FORBIDDEN")
    assert "not allowed" in error["message"]


def test_refusal_covers_every_path_not_only_api(client) -> None:
    assert_error(client.get("/schema/openapi.json", headers={"host": "evil.com"}), 403, "FORBIDDEN")


def _raw_request(app: Litestar, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """Send one request straight to the ASGI app (a client library would always add a Host header)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }
    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def test_request_without_host_header_is_refused(app: Litestar) -> None:
    status, body = _raw_request(app, "GET", "/api/system/health", headers=[])
    assert status == 403
    assert b'"FORBIDDEN"' in body


@pytest.fixture
def client_for(tmp_path: Path) -> Iterator[Any]:
    """Clients of apps built with other host settings."""
    clients: list[TestClient[Litestar]] = []

    def build(**options: Any) -> TestClient[Litestar]:
        app = create_app(Settings(workspace=tmp_path / f"ws{len(clients)}", **options))
        test_client = TestClient(app, base_url=BASE_URL)
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield build
    for test_client in clients:
        test_client.__exit__(None, None, None)


def test_allowed_host_option_adds_names(client_for) -> None:
    client = client_for(allowed_hosts=["modelyard.lan", "gpu-box:8000"])
    for host in ("modelyard.lan", "modelyard.lan:8000", "gpu-box:9000", "localhost:8000"):
        assert client.get("/api/system/health", headers={"host": host}).status_code == 200, host
    assert_error(client.get("/api/system/health", headers={"host": "evil.com"}), 403, "FORBIDDEN")


def test_bound_host_is_allowed(client_for) -> None:
    client = client_for(host="192.168.1.20")
    assert client.get("/api/system/health", headers={"host": "192.168.1.20:8000"}).status_code == 200
    assert_error(client.get("/api/system/health", headers={"host": "192.168.1.21:8000"}), 403, "FORBIDDEN")


def test_wildcard_allowed_host_accepts_any_host(client_for) -> None:
    client = client_for(allowed_hosts=["*"])
    assert client.get("/api/system/health", headers={"host": "anything.example"}).status_code == 200


def test_cross_site_post_is_refused_and_creates_nothing(client, workspace_dir: Path) -> None:
    response = client.post("/api/projects", json={"name": "csrf"}, headers={"origin": "http://evil.com"})
    error = assert_error(response, 403, "FORBIDDEN")
    assert "evil.com" in error["message"]
    assert list((workspace_dir / "projects").iterdir()) == []


@pytest.mark.parametrize(
    "origin", ["http://evil.com", "null", "http://localhost.evil.com:8000", "file://", "http://[::1", "http://[evil"]
)
def test_cross_site_patch_and_delete_are_refused(client, project_id: str, origin: str) -> None:
    headers = {"origin": origin}
    assert_error(client.patch(f"/api/projects/{project_id}", json={"name": "x"}, headers=headers), 403, "FORBIDDEN")
    assert_error(client.delete(f"/api/projects/{project_id}", headers=headers), 403, "FORBIDDEN")
    assert client.get(f"/api/projects/{project_id}").json()["data"]["name"] == "Test project"


def test_cross_site_get_is_allowed(client, project_id: str) -> None:
    response = client.get("/api/projects", headers={"origin": "http://evil.com"})
    assert response.status_code == 200
    assert [p["id"] for p in response.json()["data"]] == [project_id]


@pytest.mark.parametrize("origin", ["http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"])
def test_same_site_post_is_allowed(client, origin: str) -> None:
    response = client.post("/api/projects", json={"name": "ok"}, headers={"origin": origin})
    assert response.status_code == 201, response.text


def test_post_without_origin_is_allowed(client) -> None:
    """curl and scripts send no Origin; only browsers do, and they cannot forge it."""
    assert client.post("/api/projects", json={"name": "ok"}).status_code == 201


@websocket("/api/test-echo")
async def echo(socket: WebSocket) -> None:
    """Test-only route: no product endpoint is a WebSocket yet, but the check must already cover them."""
    await socket.accept()
    await socket.send_text("hello")
    await socket.close()


@pytest.fixture
def ws_client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    app.register(echo)
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({"host": "evil.com"}, "Host 'evil.com'"), ({"origin": "http://evil.com"}, "origin 'http://evil.com'")],
)
def test_websocket_handshake_from_foreign_host_or_origin_is_refused(ws_client, headers: dict, reason: str) -> None:
    with pytest.raises(WebSocketDisconnect) as refused:
        with ws_client.websocket_connect("/api/test-echo", headers=headers):
            pass
    assert refused.value.code == 1008
    assert reason in str(refused.value)


def test_websocket_handshake_from_same_site_is_allowed(ws_client) -> None:
    with ws_client.websocket_connect("/api/test-echo", headers={"origin": "http://localhost:8000"}) as socket:
        assert socket.receive_text() == "hello"
