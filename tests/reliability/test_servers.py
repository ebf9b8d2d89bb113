"""Real ``modelyard serve`` processes: one server per workspace, and the API token over real HTTP.

That a SIGKILLed server frees the workspace at once is proven by
``test_kill_during_import.py`` (it restarts on the same workspace).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from modelyard import cli
from tests.e2e.test_serve import MODELYARD, Server, _clean_env, free_port, start_server, stop_server

TOKEN = "reliability-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A real server with ``--api-token-file`` on its own workspace."""
    tmp_path = tmp_path_factory.mktemp("servers")
    workspace = tmp_path / "workspace"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    server = start_server(tmp_path, ["--workspace", str(workspace), "--api-token-file", str(token_file)], _clean_env())
    try:
        yield server, workspace
    finally:
        stop_server(server)


def test_api_token_file_protects_a_real_server(guarded_server: tuple[Server, Path]) -> None:
    server, _ = guarded_server
    refused = httpx.get(server.url + "/api/projects")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(server.url + "/api/projects", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(server.url + "/api/projects", headers=AUTH).status_code == 200
    assert httpx.get(server.url + "/api/system/health").status_code == 200


def test_second_server_on_the_same_workspace_is_refused_with_a_clear_message(
    guarded_server: tuple[Server, Path],
) -> None:
    server, workspace = guarded_server
    created = httpx.post(server.url + "/api/projects", json={"name": "Kept"}, headers=AUTH)
    assert created.status_code == 201, created.text
    second = subprocess.run(
        [str(MODELYARD), "serve", "--port", str(free_port()), "--workspace", str(workspace)],
        capture_output=True, text=True, timeout=120, env=_clean_env(), stdin=subprocess.DEVNULL,
    )
    assert second.returncode == 1, second.stderr
    assert "already served by another modelyard server" in second.stderr
    assert f"pid {server.process.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    # The first server is untouched and still serves the same data.
    listed = httpx.get(server.url + "/api/projects", headers=AUTH).json()["data"]
    assert created.json()["data"]["id"] in [p["id"] for p in listed]


def test_empty_api_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n", encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["serve", "--workspace", str(tmp_path / "ws"), "--api-token-file", str(empty)])
    assert result.exit_code == 2
    assert "is empty" in result.output


def test_binding_beyond_loopback_without_a_token_logs_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import uvicorn

    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(options))  # the network boundary
    monkeypatch.delenv("MODELYARD_API_TOKEN", raising=False)
    result = CliRunner().invoke(cli.main, ["serve", "--host", "0.0.0.0", "--port", "8123", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert served["host"] == "0.0.0.0"
    assert any("without an API token" in record.getMessage() for record in caplog.records)
