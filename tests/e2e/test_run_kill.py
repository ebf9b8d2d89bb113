"""Runs survive what happens to processes: stop, SIGKILL of the worker, SIGKILL of the server.

Everything is real: tiny ``simple_cnn`` trainings in worker processes started
by the app's job queue, and for the server test a real ``modelyard serve``
subprocess followed over HTTP and SSE. Runs are long enough (many tiny
epochs) to act on after their first epoch; resumes set a small ``max_epochs``
so each test ends quickly.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from modelyard.core.training.checkpoints import usable_checkpoint
from modelyard.core.training.run_folder import EventLog, pid_alive
from modelyard.core.workspace import Workspace
from tests.conftest import TINY_TRAINING_CONFIG, assert_error
from tests.e2e.test_serve import _clean_env, start_server, stop_server
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.run_fixtures import kill_run_workers, run_over_api, start_run_over_api, wait_for

HEARTBEAT_TIMEOUT_S = 5.0
LONG_RUN = {**TINY_TRAINING_CONFIG,
            "training": {"max_epochs": 1000, "scheduler": {"name": "none"}, "early_stopping": None}}  # stopped by every test


@pytest.fixture
def settings(workspace_dir: Path, import_root: Path) -> Iterator[Settings]:
    yield Settings(workspace=workspace_dir, import_roots=[import_root], scheduler_interval_s=0.3,
                   heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    kill_run_workers(workspace_dir)


def _after_first_epoch(client: Any, project_id: str, run_id: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        run = run_over_api(client, project_id, run_id)
        assert run["status"] in ("pending", "running"), run
        return run if run["checkpoints"]["last"] else None

    return wait_for(ready, timeout=180, interval=0.2, what="the first epoch's checkpoint")


def _wait_status(client: Any, project_id: str, run_id: str, statuses: set[str], timeout: float = 180) -> dict[str, Any]:
    return wait_for(lambda: (run := run_over_api(client, project_id, run_id))["status"] in statuses and run,
                    timeout=timeout, interval=0.2, what=f"status in {statuses}")


def _resume_and_finish(client: Any, services: Any, project_id: str, run_id: str, run_dir: Path) -> list[dict[str, Any]]:
    """Resume with one more epoch than the checkpoint holds; returns the epoch events of the new attempt."""
    done = usable_checkpoint(run_dir / "checkpoints")
    assert done is not None and done.epochs_done >= 1
    mark = EventLog(services.workspace, run_dir).last_id()
    body = {"max_epochs": done.epochs_done + 1}
    response = client.post(f"/api/training/{project_id}/runs/{run_id}/resume", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["resumes"][-1]["from_epoch"] == done.epochs_done
    run = _wait_status(client, project_id, run_id, {"completed", "failed", "stopped", "interrupted"})
    assert run["status"] == "completed", run["error"]
    metrics = client.get(f"/api/training/{project_id}/runs/{run_id}/metrics").json()["data"]
    assert [m["epoch"] for m in metrics] == list(range(1, done.epochs_done + 2))
    new_events = EventLog(services.workspace, run_dir).read(after_id=mark)
    epochs = [e["data"]["epoch"] for e in new_events if e["event"] == "epoch"]
    assert epochs == [done.epochs_done + 1]  # continued from the checkpoint, not from epoch 1
    return epochs


def test_stop_then_resume_continues_from_the_saved_epoch_and_completes(client, services) -> None:
    project_id, run_id = start_run_over_api(client, services, LONG_RUN, "long")
    _after_first_epoch(client, project_id, run_id)
    assert_error(client.delete(f"/api/training/{project_id}/runs/{run_id}"), 409, "CONFLICT")

    response = client.post(f"/api/training/{project_id}/runs/{run_id}/stop")
    assert response.status_code == 200 and response.json()["data"]["stop_requested"] is True
    run = _wait_status(client, project_id, run_id, {"stopped", "completed", "failed", "interrupted"}, timeout=60)
    assert run["status"] == "stopped" and run["killed"] is False and run["error"] is None

    run_dir = services.runs.run_dir(project_id, run_id)
    _resume_and_finish(client, services, project_id, run_id, run_dir)


def test_sigkilled_worker_is_interrupted_within_the_heartbeat_timeout_and_resumes(client, services) -> None:
    project_id, run_id = start_run_over_api(client, services, LONG_RUN, "long")
    run = _after_first_epoch(client, project_id, run_id)
    os.killpg(run["worker_pgid"], signal.SIGKILL)
    killed_at = time.monotonic()
    run = _wait_status(client, project_id, run_id, {"interrupted", "completed", "failed", "stopped"}, timeout=30)
    assert run["status"] == "interrupted" and run["error"]["type"] == "WorkerLost"
    assert time.monotonic() - killed_at <= HEARTBEAT_TIMEOUT_S
    assert not pid_alive(run["worker_pid"])

    run_dir = services.runs.run_dir(project_id, run_id)
    _resume_and_finish(client, services, project_id, run_id, run_dir)


def _sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Parse a live SSE body event by event (comments skipped)."""
    message: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in message:
                yield message
            message = {}
        elif line.startswith("id:"):
            message["id"] = int(line[3:].strip())
        elif line.startswith("event:"):
            message["event"] = line[6:].strip()
        elif line.startswith("data:"):
            message["data"] = json.loads(line[5:].strip())


def test_a_run_outlives_a_sigkilled_server_and_the_restarted_server_adopts_it(tmp_path: Path) -> None:
    root = tmp_path / "workspace"
    services = build_services(Settings(workspace=root))
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    env = _clean_env(MODELYARD_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_TIMEOUT_S))
    args = ["--workspace", str(root)]
    server = start_server(tmp_path, args, env)
    restarted = None
    try:
        body = {"name": "e", "config": LONG_RUN}
        created = httpx.post(f"{server.url}/api/training/{project_id}/experiments", json=body)
        assert created.status_code == 201, created.text
        started = httpx.post(f"{server.url}/api/training/{project_id}/experiments/{created.json()['data']['id']}/run")
        run_id = started.json()["data"]["run_id"]
        path = f"/api/training/{project_id}/runs/{run_id}"

        # Follow the live stream until the first epoch, as a browser would.
        seen: list[dict[str, Any]] = []
        with httpx.stream("GET", server.url + path + "/stream", timeout=httpx.Timeout(10, read=180)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for message in _sse(response):
                seen.append(message)
                if message["event"] == "epoch":
                    break
        assert [m["id"] for m in seen] == list(range(1, len(seen) + 1))

        worker_pid = httpx.get(server.url + path).json()["data"]["worker_pid"]
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        assert pid_alive(worker_pid)  # killing the server does not kill its workers

        restarted = start_server(tmp_path, args, env)
        run = httpx.get(restarted.url + path).json()["data"]
        assert run["status"] == "running" and run["worker_pid"] == worker_pid  # adopted, not restarted

        # Reconnecting with Last-Event-ID gets exactly what was missed, then live events; a stop ends the stream.
        with httpx.stream("GET", restarted.url + path + "/stream", headers={"Last-Event-ID": str(seen[-1]["id"])},
                          timeout=httpx.Timeout(10, read=180)) as response:
            rest = _sse(response)
            first = next(rest)
            assert first["id"] == seen[-1]["id"] + 1
            assert httpx.post(restarted.url + path + "/stop").json()["data"]["stop_requested"] is True
            later = [first, *rest]
        assert [m["id"] for m in later] == list(range(first["id"], first["id"] + len(later)))
        assert later[-1]["event"] == "end" and later[-1]["data"]["status"] == "stopped"
        final = httpx.get(restarted.url + path).json()["data"]
        assert final["status"] == "stopped" and final["killed"] is False
        assert final["checkpoints"]["last"] == "checkpoints/last.ckpt"  # resumable
        wait_for(lambda: not pid_alive(worker_pid), timeout=30, what="the stopped worker to exit")
    finally:
        if server.process.poll() is None:
            server.process.kill()
        if restarted is not None:
            stop_server(restarted)
        kill_run_workers(Workspace(root).root)
