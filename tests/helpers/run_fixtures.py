"""Run folders and processes for the run lifecycle tests.

``make_run_folder`` writes a run folder by the protocol (``run.json`` from a
``Run`` record) for supervisor tests that need a given state without a
training; ``stand_in_worker`` is a real process that names the run in its
command line (as a worker does) but never trains, heartbeats or stops by
itself; ``kill_run_workers`` ends whatever a test left running.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.core.ids import new_id
from modelyard.core.jobs.kinds import KINDS
from modelyard.core.jobs.process import kill_worker, start_ticks
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.records import Run, RunProgress, read_record
from modelyard.core.timeutil import utc_now_iso
from modelyard.core.training.run_folder import RUN_JSON, touch_heartbeat
from modelyard.core.workspace import Workspace


def make_run_folder(
    workspace: Workspace,
    project_id: str,
    status: str = "pending",
    devices: list[str] | None = None,
    experiment_id: str | None = None,
    **fields: Any,
) -> Path:
    """A run folder with ``run.json`` in ``status`` (the project folder is created if needed)."""
    experiment_id = experiment_id or new_id("exp")
    run_id = new_id("run")
    run_dir = workspace.experiments_dir(project_id) / experiment_id / "runs" / run_id
    run_dir.mkdir(parents=True)
    ensure_project(workspace, project_id)
    record = Run(id=run_id, experiment_id=experiment_id, project_id=project_id, status=status, created_at=utc_now_iso(),
                 devices=devices or ["cpu"], progress=RunProgress(total_epochs=3), monitor="val/loss")
    atomic_write_json(run_dir / RUN_JSON, record.with_fields(**fields))
    (run_dir / "config.yaml").write_text("{}\n", encoding="utf-8")
    return run_dir


def ensure_project(workspace: Workspace, project_id: str) -> None:
    """A bare ``project.json``, so the project lists (and its job folders are scanned)."""
    project_json = workspace.project_dir(project_id) / "project.json"
    if not project_json.exists():
        project_json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(project_json, {"id": project_id, "name": "p", "task": "classification", "description": "",
                                         "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"})


def stand_in_worker(run_dir: Path, named: bool = True) -> subprocess.Popen[bytes]:
    """A sleeping process in its own session; with ``named`` its argv carries the run id like a worker's."""
    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    if named:
        argv.append(run_dir.name)
    return subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)


def mark_running(workspace: Workspace, run_dir: Path, process: subprocess.Popen[bytes], heartbeat: bool = True,
                 started: int | None | str = "real") -> None:
    """Record ``process`` as the run's worker, claimed by the server, as the queue does when it starts one.

    ``started`` is the recorded process start time: the real one by default,
    ``None`` for a record written before start times were kept, or any other
    number to make the recorded pid look reused.
    """
    record = read_json(run_dir / RUN_JSON)
    ticks = start_ticks(process.pid) if started == "real" else started
    record.update(status="running", worker_pid=process.pid, worker_pgid=process.pid, worker_started=ticks,
                  started_at=record["created_at"],
                  claimed_by={"by": "server", "pid": os.getpid(), "started": start_ticks(os.getpid()),
                              "at": record["created_at"]})
    atomic_write_json(run_dir / RUN_JSON, record)
    if heartbeat:
        touch_heartbeat(run_dir, process.pid)


def wait_for(condition: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def kill_run_workers(workspace_root: Path) -> None:
    """SIGKILL the process group of every job worker recorded in the workspace that is still alive (any kind)."""
    for kind in KINDS.values():
        for record_path in workspace_root.glob(f"projects/*/{kind.layout}/{kind.record_name}"):
            with contextlib.suppress(Exception):
                record = read_record(record_path, kind.record_type)
                if record.status == "running" and record.worker_pid != os.getpid():
                    kill_worker(record, record_path.parent.name)


def start_run_over_api(client: Any, services: Any, config: dict[str, Any], name: str = "run") -> tuple[str, str]:
    """A new project with a tiny shapes dataset, an experiment of ``config``, and a run started through the API."""
    from tests.helpers.datasets import create_project_with_dataset

    project_id = create_project_with_dataset(services, per_class=6, size=16)
    experiment = services.experiments.create(project_id, name, config=config)
    response = client.post(f"/api/training/{project_id}/experiments/{experiment['id']}/run")
    assert response.status_code == 201, response.text
    return project_id, response.json()["data"]["run_id"]


def run_over_api(client: Any, project_id: str, run_id: str) -> dict[str, Any]:
    """``GET`` the run's record (its ``data``)."""
    return client.get(f"/api/training/{project_id}/runs/{run_id}").json()["data"]
