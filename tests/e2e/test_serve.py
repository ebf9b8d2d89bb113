"""The real ``modelyard serve``: a subprocess on a free port, talked to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import modelyard
from modelyard import cli

BIN = Path(sys.executable).parent
MODELYARD = BIN / "modelyard"
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    return {**env, **extra}


def start_server(tmp_path: Path, args: list[str], env: dict[str, str]) -> Server:
    """Start ``modelyard serve`` and wait until /api/system/health answers."""
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            [str(MODELYARD), "serve", "--port", str(port), *args],
            cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        )
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(server.url + "/api/system/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise AssertionError(f"server did not answer within {STARTUP_TIMEOUT_S} s:\n{server.output()}")


def stop_server(server: Server) -> int:
    """SIGTERM, as a service manager would; returns the exit status."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        raise


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """One server for the module, with an explicit ``--workspace`` (that wins over the environment)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    workspace = tmp_path / "flag-workspace"
    env = _clean_env(MODELYARD_WORKSPACE=str(tmp_path / "env-workspace"))
    server = start_server(tmp_path, ["--workspace", str(workspace)], env)
    try:
        yield server, workspace
    finally:
        stop_server(server)


def test_health_answers_over_real_http(served: tuple[Server, Path]) -> None:
    server, _ = served
    body = httpx.get(server.url + "/api/system/health").json()
    assert body["status"] == "ok"
    assert body["data"]["status"] == "healthy"
    assert body["data"]["version"] == modelyard.__version__


def test_project_create_list_delete_over_real_http(served: tuple[Server, Path]) -> None:
    server, workspace = served
    with httpx.Client(base_url=server.url, timeout=10) as http:
        created = http.post("/api/projects", json={"name": "Over the wire", "task": "classification"})
        assert created.status_code == 201, created.text
        project_id = created.json()["data"]["id"]
        assert (workspace / "projects" / project_id / "project.json").is_file()
        assert project_id in [p["id"] for p in http.get("/api/projects").json()["data"]]
        deleted = http.delete(f"/api/projects/{project_id}")
        assert deleted.json() == {"status": "ok", "data": {"id": project_id, "deleted": True}}
        assert not (workspace / "projects" / project_id).exists()
        missing = http.get(f"/api/projects/{project_id}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


def test_workspace_flag_wins_over_environment(served: tuple[Server, Path]) -> None:
    server, workspace = served
    data = httpx.get(server.url + "/api/system/workspace").json()["data"]
    assert data["path"] == str(workspace.resolve())
    assert not (workspace.parent / "env-workspace").exists()


def test_real_server_refuses_foreign_host_header(served: tuple[Server, Path]) -> None:
    server, _ = served
    response = httpx.get(server.url + "/api/system/health", headers={"host": "evil.example"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "FORBIDDEN"


def test_unknown_route_and_bad_json_are_envelopes_over_real_http(served: tuple[Server, Path]) -> None:
    server, _ = served
    assert httpx.get(server.url + "/api/nope").json()["error"]["code"] == "NOT_FOUND"
    bad = httpx.post(server.url + "/api/projects", content=b"{", headers={"content-type": "application/json"})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "BAD_REQUEST")


def test_the_server_serves_the_web_ui_at_the_root_and_says_where(served: tuple[Server, Path]) -> None:
    server, _ = served
    assert f"web UI: {server.url}/" in server.output()
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/app.js">' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_sigterm_stops_the_server_cleanly(served: tuple[Server, Path]) -> None:
    """Last test of the module: it ends the shared server."""
    server, _ = served
    status = stop_server(server)
    # uvicorn shuts down gracefully, then re-raises the signal it handled.
    assert status in (0, -signal.SIGTERM), server.output()
    assert "Application shutdown complete" in server.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/api/system/health", timeout=2)


@pytest.mark.parametrize("command", [[str(MODELYARD)], [sys.executable, "-m", "modelyard"]], ids=["script", "module"])
def test_version_flag(command: list[str]) -> None:
    result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60, env=_clean_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"modelyard, version {modelyard.__version__}"


def test_serve_help_lists_every_flag() -> None:
    result = subprocess.run([str(MODELYARD), "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--host", "--port", "--workspace", "--import-root", "--allowed-host", "--log-level"):
        assert flag in result.stdout


# -- flag parsing, without binding a port -------------------------------------------------------


@pytest.fixture
def captured_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace uvicorn.run (the network boundary) and record what ``serve`` would have served."""
    import uvicorn

    captured: dict[str, Any] = {}

    def fake_run(app: Any, **options: Any) -> None:
        captured["settings"] = app.state.settings
        captured.update(options)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    for name in ("MODELYARD_WORKSPACE", "MODELYARD_IMPORT_ROOTS", "MODELYARD_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)
    return captured


def test_serve_flags_reach_settings_and_uvicorn(tmp_path: Path, captured_run: dict[str, Any]) -> None:
    roots = [tmp_path / "imports-a", tmp_path / "imports-b"]
    for root in roots:
        root.mkdir()
    result = CliRunner().invoke(
        cli.main,
        ["serve", "--host", "127.0.0.1", "--port", "8123", "--workspace", str(tmp_path / "ws"),
         "--import-root", str(roots[0]), "--import-root", str(roots[1]),
         "--allowed-host", "gpu-box.lan", "--log-level", "warning"],
    )
    assert result.exit_code == 0, result.output
    settings = captured_run["settings"]
    assert settings.workspace == (tmp_path / "ws").resolve()
    assert settings.import_roots == [r.resolve() for r in roots]
    assert settings.allowed_hosts == ["gpu-box.lan"]
    assert (captured_run["host"], captured_run["port"], captured_run["log_level"]) == ("127.0.0.1", 8123, "warning")


def test_serve_defaults_are_loopback_8000_and_workspace_in_cwd(
    tmp_path: Path, captured_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.main, ["serve"])
    assert result.exit_code == 0, result.output
    assert (captured_run["host"], captured_run["port"], captured_run["log_level"]) == ("127.0.0.1", 8000, "info")
    assert captured_run["settings"].workspace == (tmp_path / "workspace").resolve()


def test_workspace_comes_from_the_environment_when_no_flag_is_given(
    tmp_path: Path, captured_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELYARD_WORKSPACE", str(tmp_path / "from-env"))
    result = CliRunner().invoke(cli.main, ["serve"])
    assert result.exit_code == 0, result.output
    assert captured_run["settings"].workspace == (tmp_path / "from-env").resolve()
    assert (tmp_path / "from-env" / "projects").is_dir()
    assert not (tmp_path / "workspace").exists()


def test_import_roots_come_from_the_environment_when_no_flag_is_given(
    tmp_path: Path, captured_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("MODELYARD_IMPORT_ROOTS", os.pathsep.join(map(str, roots)))
    result = CliRunner().invoke(cli.main, ["serve", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert captured_run["settings"].import_roots == [r.resolve() for r in roots]


@pytest.mark.parametrize(
    "args",
    [["--port", "eighty"], ["--port", "70000"], ["--log-level", "verbose"], ["--import-root", "/no/such/folder"],
     ["--unknown-flag"]],
)
def test_bad_serve_flags_are_usage_errors(tmp_path: Path, captured_run: dict[str, Any], args: list[str]) -> None:
    result = CliRunner().invoke(cli.main, ["serve", "--workspace", str(tmp_path / "ws"), *args])
    assert result.exit_code == 2, result.output
    assert "settings" not in captured_run

