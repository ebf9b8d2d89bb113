"""The job worker process (``python -m modelyard.core.jobs.worker``): cold, warm, and under DDP.

Every test starts real worker processes on real jobs (a tiny trained run from
the session fixture, or a tiny training).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.core.jobs.folder import Claimant
from modelyard.core.jobs.kinds import EVALUATE, TRAIN
from modelyard.core.jobs.queue import JobQueue
from modelyard.core.jobs.spawn import cold_command
from modelyard.core.jobs.worker import EXIT_REFUSED
from modelyard.core.jsonio import read_json
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings
from modelyard.core.training.run_folder import EventLog, create_run_folder, read_run
from tests.conftest import TINY_TRAINING_CONFIG, TrainedRun
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.run_fixtures import kill_run_workers, wait_for


def _worker(kind, folder: Path, workspace_root: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)
    return subprocess.run(cold_command(kind, folder, workspace_root), cwd=folder, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _evaluation(services: Services, run: TrainedRun) -> Path:
    record = services.evaluations.create(run.project_id, experiment_id=run.experiment_id, run_id=run.run_id)
    return services.workspace.evaluations_dir(run.project_id) / record.id


def test_worker_refuses_a_folder_that_is_not_a_job_of_the_workspace(services, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for folder in (outside, services.workspace.projects_dir / ".." / ".."):
        result = _worker(EVALUATE, folder, services.workspace.root, timeout=60)
        assert result.returncode == EXIT_REFUSED and "is not a evaluate job folder" in result.stderr


def test_worker_refuses_a_job_nobody_claimed_for_it(services, trained_run) -> None:
    """Started by hand on a pending job, a worker does nothing: only a claimant starts jobs, so each runs once."""
    folder = _evaluation(services, trained_run)
    result = _worker(EVALUATE, folder, services.workspace.root, timeout=60)
    assert result.returncode == EXIT_REFUSED and "not claimed for this worker" in result.stderr
    assert read_json(folder / "evaluation.json")["status"] == "pending"


def test_a_claimed_job_runs_in_a_cold_worker_that_records_itself(services, trained_run) -> None:
    folder = _evaluation(services, trained_run)
    EVALUATE.job(services.workspace, folder).claim(Claimant.this_process("server"))
    result = _worker(EVALUATE, folder, services.workspace.root)
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_json(folder / "evaluation.json")
    assert record["status"] == "completed" and record["metrics"]["accuracy"] is not None
    assert record["worker_pid"] not in (None, os.getpid()) and isinstance(record["worker_started"], int)


def test_a_warm_worker_started_before_the_request_runs_the_job_and_is_replaced(services, trained_run) -> None:
    queue = JobQueue(services.workspace, Settings(workspace=services.workspace.root, warm_workers=1,
                                                  scheduler_interval_s=0.2))
    queue.start()
    try:
        wait_for(lambda: queue.pool._idle, timeout=10, what="a warm worker")
        warm_pid = queue.pool._idle[0].pid
        services.evaluations.queue = queue
        folder = _evaluation(services, trained_run)
        done = wait_for(lambda: (r := read_json(folder / "evaluation.json"))["status"] in ("completed", "failed") and r,
                        timeout=240, what="the evaluation")
        assert done["status"] == "completed", done.get("error")
        assert done["worker_pid"] == warm_pid  # the pre-started process ran it
        assert done["claimed_by"]["by"] == "server" and done["claimed_by"]["pid"] == os.getpid()
        wait_for(lambda: queue.pool._idle and queue.pool._idle[0].pid != warm_pid, timeout=30,
                 what="a replacement warm worker")
        log_text = (folder / "evaluation.log").read_text(encoding="utf-8")  # its output went to the job's log
        assert f"worker pid {warm_pid}: evaluate job {folder.name} ended completed" in log_text
    finally:
        queue.shutdown()
        kill_run_workers(services.workspace.root)


@pytest.mark.slow
def test_cpu_ddp_with_two_processes_trains_one_consistent_run_through_the_job_worker(tmp_path: Path) -> None:
    """Lightning re-runs the worker's command line for rank 1, which joins the run without claiming it."""
    services = build_services(Settings(workspace=tmp_path / "ws"))
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    config = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 1, "scheduler": {"name": "none"}},
              "hardware": {"devices": ["cpu"], "num_processes": 2}}
    experiment = services.experiments.create(project_id, "ddp", config=config)
    run_dir = create_run_folder(services.workspace, project_id, experiment["id"],
                                services.experiments.run_config(project_id, experiment["id"]))
    TRAIN.job(services.workspace, run_dir).claim(Claimant.this_process("server"))
    result = _worker(TRAIN, run_dir, services.workspace.root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run = read_run(run_dir)
    assert run.status == "completed" and run.num_processes == 2
    metrics = read_json(run_dir / "metrics.json")
    assert [m["epoch"] for m in metrics] == [1]  # one writer: no duplicate records
    events = EventLog(services.workspace, run_dir).read()
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["event"] for e in events].count("end") == 1
    assert read_json(run_dir / "reproducibility.json")["world_size"] == 2
    assert sys.executable  # the worker ran with this interpreter (cold_command)
