"""Optional bearer-token auth (``MODELYARD_API_TOKEN``): deny by default, health and the schema stay open."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from modelyard.api.app import create_app
from modelyard.api.auth import needs_token, token_matches
from modelyard.core.settings import Settings
from tests.conftest import BASE_URL, assert_error

TOKEN = "s3cret-token-0123456789abcdef"
GOOD = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(workspace_dir, import_root) -> Iterator[TestClient[Litestar]]:
    app = create_app(Settings(workspace=workspace_dir, import_roots=[import_root], api_token=TOKEN))
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


def test_without_a_configured_token_requests_need_no_header(client) -> None:
    assert client.get("/api/projects").status_code == 200


def test_request_without_token_is_refused_with_401_envelope_and_challenge(guarded) -> None:
    response = guarded.get("/api/projects")
    error = assert_error(response, 401, "UNAUTHORIZED")
    assert "Bearer" in error["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
        "Bearer ",
        f"Bearer{TOKEN}",
        "Bearer \u00e9\u00e9",
    ],
)
def test_wrong_or_malformed_token_is_refused(guarded, authorization: str) -> None:
    headers = {"Authorization": authorization.encode("utf-8")}  # raw bytes: non-ASCII must not crash the check
    assert_error(guarded.get("/api/projects", headers=headers), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_correct_token_is_accepted_whatever_the_scheme_case(guarded, scheme: str) -> None:
    response = guarded.get("/api/projects", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200, response.text


def test_refused_write_changes_nothing(guarded) -> None:
    assert_error(guarded.post("/api/projects", json={"name": "Sneaky"}), 401, "UNAUTHORIZED")
    listed = guarded.get("/api/projects", headers=GOOD).json()["data"]
    assert listed == []
    created = guarded.post("/api/projects", json={"name": "Allowed"}, headers=GOOD)
    assert created.status_code == 201, created.text


def _raw_get(app: Litestar, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    """One GET straight to the ASGI app with ``path`` exactly as given (a client library would normalise it)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), *headers], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }
    anyio.run(app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize("path", ["//api/projects", "/api//projects", "/api/projects/"])
def test_path_tricks_still_need_the_token(guarded, path: str) -> None:
    status, body = _raw_get(guarded.app, path, [])
    assert status == 401, body
    assert b'"UNAUTHORIZED"' in body
    status, body = _raw_get(guarded.app, path, [(b"authorization", f"Bearer {TOKEN}".encode())])
    assert status != 401, body  # the same path with the token gets past the check


def test_health_check_stays_open_for_probes(guarded) -> None:
    response = guarded.get("/api/system/health")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "healthy"


def test_openapi_document_is_open_and_declares_the_bearer_scheme(guarded) -> None:
    response = guarded.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    doc = response.json()
    scheme = doc["components"]["securitySchemes"]["BearerToken"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert doc["security"] == [{"BearerToken": []}]
    assert doc["paths"]["/api/system/health"]["get"]["security"] == [{}]  # open, as served


def test_openapi_document_declares_no_auth_when_no_token_is_set(client) -> None:
    doc = client.get("/schema/openapi.json").json()
    assert "security" not in doc
    assert "BearerToken" not in doc.get("components", {}).get("securitySchemes", {})


def test_host_check_runs_before_auth(guarded) -> None:
    assert_error(guarded.get("/api/projects", headers={**GOOD, "host": "evil.com"}), 403, "FORBIDDEN")


def test_token_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MODELYARD_API_TOKEN", TOKEN)
    assert Settings.from_env().api_token == TOKEN


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/projects", True),
        ("/api/system/health", False),
        ("//api//system//health/", False),
        ("/api/system/health/x", True),
        ("/schema", False),
        ("/schema/openapi.json", False),
        ("/schemax", True),
        ("/", False),  # the web UI's page shell: static, no data; the page asks for the token
        ("/ui/js/app.js", False),
        ("//ui//app.css", False),
        ("/uix", True),
        ("/api/ui", True),
        ("/favicon.ico", True),
    ],
)
def test_needs_token_normalises_slashes_and_denies_by_default(path: str, expected: bool) -> None:
    assert needs_token(path) is expected


def test_token_matches_only_the_exact_bearer_token() -> None:
    assert token_matches(TOKEN, f"Bearer {TOKEN}")
    assert token_matches(TOKEN, f"  bearer   {TOKEN}  ")
    assert not token_matches(TOKEN, None)
    assert not token_matches(TOKEN, "")
    assert not token_matches(TOKEN, f"Token {TOKEN}")
