"""The job queue: device reservation and worker supervision for every job kind (core/jobs/queue.py).

Supervision tests use job folders written by the protocol and stand-in
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
from modelyard.core.errors import JobClaimedError
from modelyard.core.jobs.folder import Claimant, JobFolder
from modelyard.core.jobs.kinds import EVALUATE, TRAIN
from modelyard.core.jobs.queue import JobQueue, Seen, queue_key
from modelyard.core.jobs.spawn import cold_command
from modelyard.core.records import JobRecord
from modelyard.core.timeutil import parse_iso
from modelyard.core.training.run_folder import HEARTBEAT, STOP_REQUEST, EventLog, pid_alive, read_run
from modelyard.core.workspace import Workspace
from tests.conftest import TINY_TRAINING_CONFIG
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.run_fixtures import ensure_project, kill_run_workers, make_run_folder, mark_running, stand_in_worker, wait_for


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace(tmp_path / "ws")
    ws.prepare()
    yield ws
    kill_run_workers(ws.root)


@pytest.fixture
def settings(workspace: Workspace) -> Settings:
    return Settings(workspace=workspace.root, heartbeat_timeout_s=30.0, stop_timeout_s=30.0, warm_workers=0)


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
    report = JobQueue(workspace, settings).recover()
    record = read_run(run_dir)
    assert report.lost == [run_dir.name]
    assert record.status == "interrupted" and record.finished_at
    assert record.error.type == "WorkerLost"
    (status_name, status_data), end = _events(workspace, run_dir)[-2:]
    assert status_name == "status" and status_data["status"] == "interrupted" and "gone" in status_data["reason"]
    assert end == ("end", {"status": "interrupted"})


def test_recovery_adopts_a_live_worker_and_requeues_pending_runs(workspace, settings, project_id, processes) -> None:
    running = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(running)
    processes.append(worker)
    mark_running(workspace, running, worker)
    pending = make_run_folder(workspace, project_id, status="pending", devices=["gpu:7"])
    queue = JobQueue(workspace, settings)
    report = queue.recover()
    assert report.adopted == [running.name] and report.pending == [pending.name] and report.lost == []
    assert read_run(running).status == "running"
    # The adopted worker stays supervised: when it dies the run becomes interrupted.
    worker.kill()
    worker.wait()
    queue.tick()
    assert read_run(running).status == "interrupted"


def test_recovery_leaves_finished_runs_untouched(workspace, settings, project_id) -> None:
    run_dirs = {status: make_run_folder(workspace, project_id, status=status, worker_pid=_dead_pid())
                for status in ("completed", "failed", "stopped", "interrupted")}
    before = {status: (run_dir / "run.json").read_bytes() for status, run_dir in run_dirs.items()}
    report = JobQueue(workspace, settings).recover()
    assert report.lost == [] and report.adopted == []
    assert {status: (run_dir / "run.json").read_bytes() for status, run_dir in run_dirs.items()} == before


# -- supervision while running -------------------------------------------------------


def test_a_worker_without_progress_is_killed_and_marked_interrupted_after_the_liveness_timeout(workspace, project_id,
                                                                                    processes) -> None:
    settings = Settings(workspace=workspace.root, heartbeat_timeout_s=3.0, warm_workers=0)
    run_dir = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(run_dir)
    processes.append(worker)
    mark_running(workspace, run_dir, worker)
    queue = JobQueue(workspace, settings)
    queue.tick()
    assert read_run(run_dir).status == "running"  # fresh heartbeat
    stale = time.time() - 10
    os.utime(run_dir / HEARTBEAT, (stale, stale))
    queue.tick()
    record = read_run(run_dir)
    assert record.status == "interrupted"
    assert "no progress" in record.error.message
    assert worker.wait(timeout=5) == -signal.SIGKILL


def test_a_process_that_is_not_the_runs_worker_is_never_killed(workspace, project_id, processes) -> None:
    """A recorded pid reused by an unrelated process: the run is interrupted, the process left alone."""
    settings = Settings(workspace=workspace.root, heartbeat_timeout_s=3.0, warm_workers=0)
    for started in (None, 12345):  # an old record (judged by its command line), a start time that differs
        run_dir = make_run_folder(workspace, project_id, status="running")
        stranger = stand_in_worker(run_dir, named=False)
        processes.append(stranger)
        mark_running(workspace, run_dir, stranger, started=started)
        stale = time.time() - 10
        os.utime(run_dir / HEARTBEAT, (stale, stale))
        JobQueue(workspace, settings).tick()
        assert read_run(run_dir).status == "interrupted"
        assert stranger.poll() is None and pid_alive(stranger.pid)


def test_worker_that_ignores_a_stop_request_is_killed_after_the_stop_timeout(workspace, project_id, processes) -> None:
    settings = Settings(workspace=workspace.root, stop_timeout_s=1.0, warm_workers=0)
    run_dir = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(run_dir)
    processes.append(worker)
    mark_running(workspace, run_dir, worker)
    record = read_run(run_dir)
    record.stop_requested = True
    atomic_write_json(run_dir / "run.json", record)
    (run_dir / STOP_REQUEST).write_text("{}")
    queue = JobQueue(workspace, settings)
    queue.tick()
    assert read_run(run_dir).status == "running"  # still within the timeout
    time.sleep(1.2)
    queue.tick()
    record = read_run(run_dir)
    assert record.status == "stopped" and record.killed is True
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
    queue = JobQueue(workspace, settings)
    queue.tick()
    queue.tick()
    assert read_run(waiting).status == "pending"
    assert read_run(waiting).worker_pid is None
    place = queue.waiting(waiting)
    assert place is not None and place.position == 1 and busy.name in place.reason


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
    queue = JobQueue(workspace, settings)
    queue.tick()
    assert read_run(first).status == "pending"  # gpu:0 is busy
    assert read_run(second).status == "pending"  # gpu:1 is free, but `first` came earlier and needs it
    started = read_run(elsewhere)
    assert started.status == "running" and started.worker_pid and started.claimed_by.by == "server"
    assert [queue.waiting(first).position, queue.waiting(second).position] == [1, 2]
    assert "gpu:0" in queue.waiting(first).reason and "gpu:1" in queue.waiting(second).reason


def test_a_cold_worker_is_the_job_worker_module_in_its_own_session(workspace, settings, project_id) -> None:
    run_dir = make_run_folder(workspace, project_id, status="pending")
    queue = JobQueue(workspace, settings)
    queue.tick()
    record = read_run(run_dir)
    assert record.status == "running" and record.worker_pgid == record.worker_pid
    pid = record.worker_pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert [part.decode() for part in cmdline if part] == cold_command(TRAIN, run_dir, workspace.root)
        assert os.getpgid(pid) == pid != os.getpgrp()
    except (FileNotFoundError, ProcessLookupError):
        pass  # the worker already exited (this folder has no real config); it was started as checked below
    assert (run_dir / "train.log").exists()


def test_an_ended_jobs_record_is_parsed_once_and_read_again_when_it_is_replaced(workspace, settings, project_id,
                                                                               monkeypatch) -> None:
    ended = make_run_folder(workspace, project_id, status="completed")
    queue = JobQueue(workspace, settings)
    assert [seen.status for seen in queue.scan()] == ["completed"]
    parsed: list[Path] = []
    original = JobFolder.read

    def counting_read(job: JobFolder) -> JobRecord:
        parsed.append(job.folder)
        return original(job)

    monkeypatch.setattr(JobFolder, "read", counting_read)
    assert [seen.status for seen in queue.scan()] == ["completed"]
    assert parsed == []  # unchanged since the last scan: a stat, no parse
    atomic_write_json(ended / "run.json", read_run(ended).with_fields(status="pending"))  # resumed elsewhere
    assert [seen.status for seen in queue.scan()] == ["pending"]
    assert parsed == [ended]


def test_queue_order_is_the_time_a_run_entered_the_queue(workspace, project_id) -> None:
    old = make_run_folder(workspace, project_id, created_at="2026-01-01T00:00:00Z",
                          resumes=[{"at": "2026-01-03T00:00:00Z", "from_epoch": 1, "max_epochs": 3,
                                    "checkpoint": None}])
    new = make_run_folder(workspace, project_id, created_at="2026-01-02T00:00:00Z")
    assert queue_key(Seen(TRAIN, new, read_run(new))) < queue_key(Seen(TRAIN, old, read_run(old)))


def test_background_thread_starts_and_shuts_down_without_touching_workers(workspace, project_id, processes) -> None:
    settings = Settings(workspace=workspace.root, scheduler_interval_s=0.1, warm_workers=0)
    run_dir = make_run_folder(workspace, project_id, status="running")
    worker = stand_in_worker(run_dir)
    processes.append(worker)
    mark_running(workspace, run_dir, worker)
    queue = JobQueue(workspace, settings)
    report = queue.start()
    try:
        assert report.adopted == [run_dir.name] and queue.running
        worker.kill()
        worker.wait()
        wait_for(lambda: read_run(run_dir).status == "interrupted", timeout=5, what="interrupted")
    finally:
        queue.shutdown()
    assert not queue.running
    survivor = make_run_folder(workspace, project_id, status="running")
    other = stand_in_worker(survivor)
    processes.append(other)
    mark_running(workspace, survivor, other)
    queue = JobQueue(workspace, settings)
    queue.start()
    queue.shutdown()
    assert other.poll() is None  # shutting the server down never stops a worker
    assert read_json(survivor / "run.json")["status"] == "running"


def test_two_runs_on_the_cpu_train_one_after_the_other(workspace) -> None:
    """Real tiny trainings: the second run waits ``pending`` until the first one has ended."""
    services = build_services(Settings(workspace=workspace.root, scheduler_interval_s=0.2, warm_workers=0))
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    config = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 1, "scheduler": {"name": "none"}}}
    experiment = services.experiments.create(project_id, "queue", config=config)
    first = services.runs.start_run(project_id, experiment["id"]).id
    second = services.runs.start_run(project_id, experiment["id"]).id
    observed: list[tuple[str, str]] = []

    def both_finished() -> bool:
        statuses = tuple(services.runs.get_run(project_id, run_id).status for run_id in (first, second))
        observed.append(statuses)
        return not set(statuses) & {"pending", "running"}

    services.queue.start()
    try:
        wait_for(both_finished, timeout=240, interval=0.1, what="both runs to finish")
    finally:
        services.queue.shutdown()
    assert observed[-1] == ("completed", "completed")
    assert ("running", "running") not in observed
    assert ("running", "pending") in observed
    done_first, done_second = (services.runs.get_run(project_id, run_id) for run_id in (first, second))
    assert parse_iso(done_second.started_at) >= parse_iso(done_first.finished_at)


def test_a_running_job_whose_claimant_and_worker_are_gone_is_lost(workspace, project_id) -> None:
    """Claimed by a server that died before it recorded a worker: nothing will ever end it but the queue."""
    settings = Settings(workspace=workspace.root, warm_workers=0)
    run_dir = make_run_folder(workspace, project_id, status="running",
                              claimed_by={"by": "server", "pid": _dead_pid(), "started": 1, "at": "2026-01-01T00:00:00Z"})
    JobQueue(workspace, settings).tick()
    record = read_run(run_dir)
    assert record.status == "interrupted" and record.error.type == "WorkerLost"


def test_a_job_claimed_by_the_cli_is_never_started_by_the_queue(workspace, settings, project_id) -> None:
    """``modelyard train`` claims its run before training it: the server must not start a second worker."""
    run_dir = make_run_folder(workspace, project_id, status="pending")
    TRAIN.job(workspace, run_dir).claim(Claimant.this_process("cli"))
    queue = JobQueue(workspace, settings)
    queue.tick()
    record = read_run(run_dir)
    assert record.status == "running" and record.worker_pid == os.getpid()
    assert record.claimed_by.by == "cli" and queue._children == {}
    with pytest.raises(JobClaimedError, match="already being run by the cli"):
        TRAIN.job(workspace, run_dir).claim(Claimant.this_process("server"))


def test_a_job_is_claimed_exactly_once_when_claimants_race(workspace, project_id) -> None:
    """Eight threads claim the same pending job at once: exactly one wins, the others are refused."""
    import threading

    run_dir = make_run_folder(workspace, project_id, status="pending")
    job = TRAIN.job(workspace, run_dir)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        try:
            job.claim(Claimant.this_process("cli"))
            outcomes.append("won")
        except JobClaimedError:
            outcomes.append("refused")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["won"]


def test_an_evaluation_waits_for_a_gpu_that_a_run_trains_on(workspace, settings, project_id, processes) -> None:
    busy = make_run_folder(workspace, project_id, status="running", devices=["gpu:0"])
    worker = stand_in_worker(busy)
    processes.append(worker)
    mark_running(workspace, busy, worker)
    eval_dir = _job_folder(workspace, project_id, EVALUATE, devices=["gpu:0"])
    queue = JobQueue(workspace, settings)
    queue.tick()
    assert read_json(eval_dir / "evaluation.json")["status"] == "pending"
    place = queue.waiting(eval_dir)
    assert place is not None and place.position == 1 and place.reason == f"gpu:0 is taken by {busy.name}"


def test_cpu_jobs_share_the_cpu_slots_and_never_wait_for_cpu_training(workspace, project_id, processes) -> None:
    settings = Settings(workspace=workspace.root, cpu_job_slots=2, warm_workers=0)
    training = make_run_folder(workspace, project_id, status="running", devices=["cpu"])
    worker = stand_in_worker(training)
    processes.append(worker)
    mark_running(workspace, training, worker)
    evaluations = [_job_folder(workspace, project_id, EVALUATE, created_at=f"2026-01-01T00:00:0{i}Z") for i in range(3)]
    queued_run = make_run_folder(workspace, project_id, status="pending", devices=["cpu"])
    queue = JobQueue(workspace, settings)
    plan = {seen.folder: reason for seen, reason in queue.plan(queue.scan())}
    assert plan[evaluations[0]] is None and plan[evaluations[1]] is None  # two slots, although the CPU trains
    assert "CPU job slot" in plan[evaluations[2]]
    assert plan[queued_run] == f"the CPU is training {training.name}"


def test_an_evaluation_without_progress_fails_after_its_kinds_timeout(workspace, project_id, processes) -> None:
    settings = Settings(workspace=workspace.root, short_job_timeout_s=2.0, worker_start_grace_s=0.0, warm_workers=0)
    eval_dir = _job_folder(workspace, project_id, EVALUATE, status="running")
    worker = stand_in_worker(eval_dir)
    processes.append(worker)
    job = EVALUATE.job(workspace, eval_dir)
    job.update(lambda r: r.with_fields(worker_pid=worker.pid, worker_pgid=worker.pid,
                                       claimed_by={"by": "server", "pid": os.getpid(), "at": "2026-01-01T00:00:00Z"}))
    job.touch_heartbeat(worker.pid)
    queue = JobQueue(workspace, settings)
    queue.tick()
    assert job.read().status == "running"
    stale = time.time() - 10
    os.utime(eval_dir / HEARTBEAT, (stale, stale))
    queue.tick()
    record = job.read()
    assert record.status == "failed" and "no progress" in record.error.message
    assert worker.wait(timeout=5) == -signal.SIGKILL


def _job_folder(workspace: Workspace, project_id: str, kind, status: str = "pending", devices=None,
                created_at: str = "2026-01-01T00:00:00Z"):
    """A minimal record of an evaluation/export job in ``status``."""
    ensure_project(workspace, project_id)
    job_id = new_id(kind.prefix)
    folder = workspace.project_dir(project_id) / kind.layout.split("/")[0] / job_id
    folder.mkdir(parents=True)
    atomic_write_json(folder / kind.record_name, {"id": job_id, "project_id": project_id, "status": status,
                                                  "created_at": created_at, "devices": devices or ["cpu"],
                                                  "worker_pid": None, "progress": {"done": 0, "total": 1}})
    return folder


def test_supervision_timeouts_can_be_set_through_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MODELYARD_HEARTBEAT_TIMEOUT_S", "4.5")
    monkeypatch.setenv("MODELYARD_STOP_TIMEOUT_S", "7")
    monkeypatch.setenv("MODELYARD_CPU_JOB_SLOTS", "3")
    monkeypatch.setenv("MODELYARD_WARM_WORKERS", "0")
    settings = Settings.from_env(workspace=tmp_path)
    assert (settings.heartbeat_timeout_s, settings.stop_timeout_s) == (4.5, 7.0)
    assert (settings.cpu_job_slots, settings.warm_workers) == (3, 0)
    assert Settings.from_env(workspace=tmp_path, stop_timeout_s=2.0).stop_timeout_s == 2.0  # explicit values win
