"""The device queue and worker supervision (core/training/scheduler.py).

Supervision tests use run folders written by the protocol and stand-in
worker processes (real processes that never train), so each state is exact;
the queue is also exercised end to end with real tiny trainings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.core.ids import new_id
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from modelyard.core.training.run_files import HEARTBEAT, STOP_REQUEST, EventLog, pid_alive, read_run, touch_heartbeat
from modelyard.core.training.scheduler import RunScheduler, parse_iso, queue_key, worker_command
from modelyard.core.workspace import Workspace
from tests.conftest import TINY_TRAINING_CONFIG
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.run_fixtures import kill_run_workers, make_run_folder, mark_running, stand_in_worker, wait_for


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace(tmp_path / "ws")
    ws.prepare()
    yield ws
    kill_run_workers(ws.root)


@pytest.fixture
def settings(workspace: Workspace) -> Settings:
    return Settings(workspace=workspace.root, heartbeat_timeout_s=30.0, stop_timeout_s=30.0)


@pytest.fixture
def project_id() -> str:
    return new_id("proj")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _events(workspace: Workspace, run_dir: Path) -> list[tuple[str, dict]]:
    return [(e["event"], e["data"]) for e in EventLog(workspace, run_dir).read()]


# -- recovery at server start -----------------------------------------------------


def test_recovery_marks_a_running_run_whose_worker_is_gone_interrupted(workspace, settings, project_id) -> None:
    run_dir = make_run_folder(workspace, project_id, status="running", worker_pid=_dead_pid())
    report = RunScheduler(workspace, settings).recover()
    record = read_run(run_dir)
    assert report.interrupted == [run_dir.name]
    assert record["status"] == "interrupted" and record["finished_at"]
    assert record["error"]["type"] == "WorkerLost"
    (status_name, status_data), end = _events(workspace, run_dir)[-2:]
    assert status_name == "status" and status_data["status"] == "interrupted" and "gone" in status_data["reason"]
    assert end == ("end", {"status": "interrupted"})


def test_recovery_adopts_a_live_worker_and_requeues_pending_runs(workspace, settings, project_id, processes) -> None:
    running = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(running)
    processes.append(worker)
    mark_running(workspace, running, worker)
    pending = make_run_folder(workspace, project_id, status="pending", devices=["gpu:7"])
    scheduler = RunScheduler(workspace, settings)
    report = scheduler.recover()
    assert report.adopted == [running.name] and report.pending == [pending.name] and report.interrupted == []
    assert read_run(running)["status"] == "running"
    # The adopted worker stays supervised: when it dies the run becomes interrupted.
    worker.kill()
    worker.wait()
    scheduler.tick()
    assert read_run(running)["status"] == "interrupted"


def test_recovery_leaves_finished_runs_untouched(workspace, settings, project_id) -> None:
    run_dirs = {status: make_run_folder(workspace, project_id, status=status, worker_pid=_dead_pid())
                for status in ("completed", "failed", "stopped", "interrupted")}
    before = {status: (run_dir / "run.json").read_bytes() for status, run_dir in run_dirs.items()}
    report = RunScheduler(workspace, settings).recover()
    assert report.interrupted == [] and report.adopted == []
    assert {status: (run_dir / "run.json").read_bytes() for status, run_dir in run_dirs.items()} == before


# -- supervision while running -------------------------------------------------------


def test_silent_worker_is_killed_and_marked_interrupted_after_the_heartbeat_timeout(workspace, project_id,
                                                                                    processes) -> None:
    settings = Settings(workspace=workspace.root, heartbeat_timeout_s=3.0)
    run_dir = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(run_dir)
    processes.append(worker)
    mark_running(workspace, run_dir, worker)
    scheduler = RunScheduler(workspace, settings)
    scheduler.tick()
    assert read_run(run_dir)["status"] == "running"  # fresh heartbeat
    stale = time.time() - 10
    os.utime(run_dir / HEARTBEAT, (stale, stale))
    scheduler.tick()
    record = read_run(run_dir)
    assert record["status"] == "interrupted"
    assert "heartbeat" in record["error"]["message"]
    assert worker.wait(timeout=5) == -signal.SIGKILL


def test_a_process_that_is_not_the_runs_worker_is_never_killed(workspace, project_id, processes) -> None:
    """A recorded pid reused by an unrelated process: the run is interrupted, the process left alone."""
    settings = Settings(workspace=workspace.root, heartbeat_timeout_s=3.0)
    run_dir = make_run_folder(workspace, project_id, status="running")
    stranger = stand_in_worker(run_dir, named=False)
    processes.append(stranger)
    mark_running(workspace, run_dir, stranger)
    stale = time.time() - 10
    os.utime(run_dir / HEARTBEAT, (stale, stale))
    RunScheduler(workspace, settings).tick()
    assert read_run(run_dir)["status"] == "interrupted"
    assert stranger.poll() is None and pid_alive(stranger.pid)


def test_worker_that_ignores_a_stop_request_is_killed_after_the_stop_timeout(workspace, project_id, processes) -> None:
    settings = Settings(workspace=workspace.root, stop_timeout_s=1.0)
    run_dir = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(run_dir)
    processes.append(worker)
    mark_running(workspace, run_dir, worker)
    record = read_run(run_dir)
    record["stop_requested"] = True
    atomic_write_json(run_dir / "run.json", record)
    (run_dir / STOP_REQUEST).write_text("{}")
    scheduler = RunScheduler(workspace, settings)
    scheduler.tick()
    assert read_run(run_dir)["status"] == "running"  # still within the timeout
    time.sleep(1.2)
    scheduler.tick()
    record = read_run(run_dir)
    assert record["status"] == "stopped" and record["killed"] is True
    assert worker.wait(timeout=5) == -signal.SIGKILL
    assert [name for name, _ in _events(workspace, run_dir)] == ["status", "end"]
    assert _events(workspace, run_dir)[-1] == ("end", {"status": "stopped"})


# -- the queue ---------------------------------------------------------------------


def test_a_pending_run_waits_while_its_device_is_busy(workspace, settings, project_id, processes) -> None:
    busy = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(busy)
    processes.append(worker)
    mark_running(workspace, busy, worker)
    waiting = make_run_folder(workspace, project_id, status="pending", devices=["cpu"])
    scheduler = RunScheduler(workspace, settings)
    scheduler.tick()
    scheduler.tick()
    assert read_run(waiting)["status"] == "pending"
    assert read_run(waiting)["worker_pid"] is None
    assert scheduler.queue_position(waiting) == 1


def test_queue_is_first_in_first_out_and_a_waiting_run_reserves_its_devices(workspace, settings, project_id,
                                                                            processes) -> None:
    busy = make_run_folder(workspace, project_id, status="running", devices=["gpu:0"])
    worker = stand_in_worker(busy)
    processes.append(worker)
    mark_running(workspace, busy, worker)
    first = make_run_folder(workspace, project_id, status="pending", devices=["gpu:0", "gpu:1"],
                            created_at="2026-01-01T00:00:01Z")
    second = make_run_folder(workspace, project_id, status="pending", devices=["gpu:1"],
                             created_at="2026-01-01T00:00:02Z")
    elsewhere = make_run_folder(workspace, project_id, status="pending", devices=["gpu:2"],
                                created_at="2026-01-01T00:00:03Z")
    scheduler = RunScheduler(workspace, settings)
    scheduler.tick()
    assert read_run(first)["status"] == "pending"  # gpu:0 is busy
    assert read_run(second)["status"] == "pending"  # gpu:1 is free, but `first` came earlier and needs it
    started = read_run(elsewhere)
    assert started["status"] == "running" and started["worker_pid"] and started["timings"]["queued_s"] is not None
    assert [scheduler.queue_position(first), scheduler.queue_position(second)] == [1, 2]


def test_a_started_worker_is_the_protocol_entry_point_in_its_own_session(workspace, settings, project_id) -> None:
    run_dir = make_run_folder(workspace, project_id, status="pending")
    scheduler = RunScheduler(workspace, settings)
    scheduler.tick()
    record = read_run(run_dir)
    assert record["status"] == "running" and record["worker_pgid"] == record["worker_pid"]
    pid = record["worker_pid"]
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert [part.decode() for part in cmdline if part] == worker_command(run_dir, workspace.root, resume=False)
        assert os.getpgid(pid) == pid != os.getpgrp()
    except (FileNotFoundError, ProcessLookupError):
        pass  # the worker already exited (this folder has no real config); it was started as checked below
    assert (run_dir / "train.log").exists()


def test_queue_order_is_the_time_a_run_entered_the_queue(workspace, project_id) -> None:
    old = make_run_folder(workspace, project_id, created_at="2026-01-01T00:00:00Z",
                          resumes=[{"at": "2026-01-03T00:00:00Z", "from_epoch": 1, "max_epochs": 3,
                                    "checkpoint": None}])
    new = make_run_folder(workspace, project_id, created_at="2026-01-02T00:00:00Z")
    assert queue_key(new, read_run(new)) < queue_key(old, read_run(old))


def test_background_thread_starts_and_shuts_down_without_touching_workers(workspace, project_id, processes) -> None:
    settings = Settings(workspace=workspace.root, scheduler_interval_s=0.1)
    run_dir = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(run_dir)
    processes.append(worker)
    mark_running(workspace, run_dir, worker)
    scheduler = RunScheduler(workspace, settings)
    report = scheduler.start()
    try:
        assert report.adopted == [run_dir.name] and scheduler.running
        worker.kill()
        worker.wait()
        wait_for(lambda: read_run(run_dir)["status"] == "interrupted", timeout=5, what="interrupted")
    finally:
        scheduler.shutdown()
    assert not scheduler.running
    survivor = make_run_folder(workspace, project_id, status="running")
    other = stand_in_worker(survivor)
    processes.append(other)
    mark_running(workspace, survivor, other)
    scheduler = RunScheduler(workspace, settings)
    scheduler.start()
    scheduler.shutdown()
    assert other.poll() is None  # shutting the server down never stops a worker
    assert read_json(survivor / "run.json")["status"] == "running"


def test_two_runs_on_the_cpu_train_one_after_the_other(workspace) -> None:
    """Real tiny trainings: the second run waits ``pending`` until the first one has ended."""
    services = build_services(Settings(workspace=workspace.root, scheduler_interval_s=0.2))
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    config = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 1, "scheduler": {"name": "none"}}}
    experiment = services.experiments.create(project_id, "queue", config=config)
    first = services.runs.start_run(project_id, experiment["id"])["id"]
    second = services.runs.start_run(project_id, experiment["id"])["id"]
    observed: list[tuple[str, str]] = []

    def both_finished() -> bool:
        statuses = tuple(services.runs.get_run(project_id, run_id)["status"] for run_id in (first, second))
        observed.append(statuses)
        return not set(statuses) & {"pending", "running"}

    services.runs.scheduler.start()
    try:
        wait_for(both_finished, timeout=240, interval=0.1, what="both runs to finish")
    finally:
        services.runs.scheduler.shutdown()
    assert observed[-1] == ("completed", "completed")
    assert ("running", "running") not in observed
    assert ("running", "pending") in observed
    done_first, done_second = (services.runs.get_run(project_id, run_id) for run_id in (first, second))
    assert parse_iso(done_second["started_at"]) >= parse_iso(done_first["finished_at"])


def test_a_running_record_without_a_pid_is_judged_by_its_heartbeat_only(workspace, project_id) -> None:
    settings = Settings(workspace=workspace.root, heartbeat_timeout_s=3.0)
    run_dir = make_run_folder(workspace, project_id, status="running")
    scheduler = RunScheduler(workspace, settings)
    scheduler.tick()
    assert read_run(run_dir)["status"] == "running"  # no pid, no heartbeat, not started: nothing says it is dead
    (run_dir / HEARTBEAT).write_text("{}")
    stale = time.time() - 10
    os.utime(run_dir / HEARTBEAT, (stale, stale))
    scheduler.tick()
    assert read_run(run_dir)["status"] == "interrupted"


def test_a_pending_run_with_a_fresh_heartbeat_is_left_to_the_process_starting_it(workspace, settings,
                                                                                 project_id) -> None:
    """``modelyard train`` trains its own pending run in the foreground: the server must not start a second worker."""
    run_dir = make_run_folder(workspace, project_id, status="pending")
    touch_heartbeat(run_dir, os.getpid())
    RunScheduler(workspace, settings).tick()
    record = read_run(run_dir)
    assert record["status"] == "pending" and record["worker_pid"] is None


def test_supervision_timeouts_can_be_set_through_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MODELYARD_HEARTBEAT_TIMEOUT_S", "4.5")
    monkeypatch.setenv("MODELYARD_STOP_TIMEOUT_S", "7")
    settings = Settings.from_env(workspace=tmp_path)
    assert (settings.heartbeat_timeout_s, settings.stop_timeout_s) == (4.5, 7.0)
    assert Settings.from_env(workspace=tmp_path, stop_timeout_s=2.0).stop_timeout_s == 2.0  # explicit values win
