"""Runs API (reference section 4): start, status, metrics, stop, resume, delete.

One test trains a real tiny run through the API (worker process started by
the app's job queue); the others address runs in exact states written by
the protocol.
"""

from __future__ import annotations

import time

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.core.jsonio import atomic_write_json
from modelyard.core.records import Run
from modelyard.core.settings import Settings
from modelyard.core.training.run_folder import EventLog, update_run
from tests.api.test_stream import parse_sse
from tests.conftest import TINY_TRAINING_CONFIG, assert_error
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.run_fixtures import kill_run_workers, make_run_folder, mark_running, stand_in_worker, wait_for

TRAINING = "/api/training"


@pytest.fixture
def settings(workspace_dir: Path, import_root: Path) -> Iterator[Settings]:
    yield Settings(workspace=workspace_dir, import_roots=[import_root], scheduler_interval_s=0.3)
    kill_run_workers(workspace_dir)  # never leave a worker behind a failed test


@pytest.fixture
def experiment(client, services) -> tuple[str, str]:
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    body = {"name": "tiny", "config": TINY_TRAINING_CONFIG}
    response = client.post(f"{TRAINING}/{project_id}/experiments", json=body)
    assert response.status_code == 201, response.text
    return project_id, response.json()["data"]["id"]


def _run_url(project_id: str, run_id: str, action: str = "") -> str:
    return f"{TRAINING}/{project_id}/runs/{run_id}" + (f"/{action}" if action else "")


def test_started_run_trains_to_completion_with_metrics_checkpoints_and_events(client, experiment) -> None:
    project_id, experiment_id = experiment
    response = client.post(f"{TRAINING}/{project_id}/experiments/{experiment_id}/run")
    assert response.status_code == 201, response.text
    started = response.json()["data"]
    assert started["status"] == "pending" and started["run_id"].startswith("run-")
    run_id = started["run_id"]

    def finished() -> dict | None:
        run = client.get(_run_url(project_id, run_id)).json()["data"]
        return run if run["status"] not in ("pending", "running") else None

    run = wait_for(finished, timeout=240, interval=0.5, what="the run to finish")
    assert run["status"] == "completed", run["error"]
    assert run["progress"]["epoch"] == run["progress"]["total_epochs"] == 2
    assert run["checkpoints"] == {"best": "checkpoints/best.ckpt", "last": "checkpoints/last.ckpt"}
    assert run["worker_pid"] and run["started_at"] and run["finished_at"] and run["elapsed_s"] > 0
    assert run["timings"]["queued_s"] is not None and run["timings"]["train_s"] > 0
    assert run["latest_metrics"]["epoch"] == 2 and run["best_epoch"] in (1, 2)

    metrics = client.get(_run_url(project_id, run_id, "metrics")).json()["data"]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "time_s"} <= set(metrics[0])

    listed = client.get(f"{TRAINING}/{project_id}/experiments/{experiment_id}/runs").json()["data"]
    assert [r["id"] for r in listed] == [run_id]

    # The stream of the finished run replays every event, in order, and closes.
    messages = parse_sse(client.get(_run_url(project_id, run_id, "stream")).text)
    names = [m["event"] for m in messages]
    assert names[0] == "status" and names[-1] == "end" and names.count("epoch") == 2
    assert set(names) <= {"status", "progress", "epoch", "log", "end"}
    ids = [m["id"] for m in messages]
    assert ids == list(range(1, len(ids) + 1))
    replay = parse_sse(client.get(_run_url(project_id, run_id, "stream"), headers={"Last-Event-ID": str(ids[2])}).text)
    assert replay == messages[3:]

    # A completed run cannot be resumed, and can be deleted.
    error = assert_error(client.post(_run_url(project_id, run_id, "resume")), 409, "CONFLICT")
    assert "completed" in error["message"]
    assert client.delete(_run_url(project_id, run_id)).json()["data"] == {"id": run_id, "deleted": True}
    assert_error(client.get(_run_url(project_id, run_id)), 404, "NOT_FOUND")


def test_starting_a_run_of_a_missing_experiment_is_not_found(client, experiment) -> None:
    project_id, _ = experiment
    assert_error(client.post(f"{TRAINING}/{project_id}/experiments/exp-00000000/run"), 404, "NOT_FOUND")
    assert_error(client.post(f"{TRAINING}/proj-00000000/experiments/exp-00000000/run"), 404, "NOT_FOUND")


def test_starting_a_run_in_a_project_without_dataset_is_a_conflict(client, services, project_id) -> None:
    experiment = services.experiments.create(project_id, "no data", config=TINY_TRAINING_CONFIG)
    error = assert_error(client.post(f"{TRAINING}/{project_id}/experiments/{experiment['id']}/run"), 409, "CONFLICT")
    assert "no dataset" in error["message"] and error["details"]["project_id"] == project_id


def test_get_run_shows_a_queued_run_with_its_place_in_the_queue(client, services, project_id) -> None:
    busy = make_run_folder(services.workspace, project_id, status="running")
    worker = stand_in_worker(busy)
    try:
        mark_running(services.workspace, busy, worker)
        waiting = make_run_folder(services.workspace, project_id, status="pending")
        run = client.get(_run_url(project_id, waiting.name)).json()["data"]
        assert run["status"] == "pending" and run["queue_position"] == 1 and run["started_at"] is None
        running = client.get(_run_url(project_id, busy.name)).json()["data"]
        assert running["status"] == "running" and running["heartbeat_age_s"] is not None
    finally:
        worker.kill()
        worker.wait()


def test_the_runs_list_shows_each_queued_run_with_its_place_in_the_queue(client, services, project_id) -> None:
    busy = make_run_folder(services.workspace, project_id, status="running")
    worker = stand_in_worker(busy)
    try:
        mark_running(services.workspace, busy, worker)
        experiment = busy.parent.parent.name
        first = make_run_folder(services.workspace, project_id, status="pending", experiment_id=experiment)
        second = make_run_folder(services.workspace, project_id, status="pending", experiment_id=experiment)
        listed = client.get(f"{TRAINING}/{project_id}/experiments/{experiment}/runs").json()["data"]
        places = {run["id"]: run["queue_position"] for run in listed}
        assert places == {busy.name: None, first.name: 1, second.name: 2}
        # the same places as each run's own record
        for run_dir in (first, second):
            single = client.get(_run_url(project_id, run_dir.name)).json()["data"]
            assert single["queue_position"] == places[run_dir.name] and single["waiting_reason"]
    finally:
        worker.kill()
        worker.wait()


def test_deleting_a_running_run_is_a_conflict(client, services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="running")
    worker = stand_in_worker(run_dir)
    try:
        mark_running(services.workspace, run_dir, worker)
        assert_error(client.delete(_run_url(project_id, run_dir.name)), 409, "CONFLICT")
        assert (run_dir / "run.json").is_file()
    finally:
        worker.kill()
        worker.wait()


def test_stop_of_a_queued_run_stops_it_and_a_second_stop_is_a_conflict(client, services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="pending", devices=["gpu:99"])
    response = client.post(_run_url(project_id, run_dir.name, "stop"))
    assert response.status_code == 200 and response.json()["data"]["status"] == "stopped"
    assert_error(client.post(_run_url(project_id, run_dir.name, "stop")), 409, "CONFLICT")
    assert [e["event"] for e in EventLog(services.workspace, run_dir).read()] == ["status", "end"]


def test_resuming_a_completed_run_is_refused_with_409(client, services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="completed")
    error = assert_error(client.post(_run_url(project_id, run_dir.name, "resume"), json={"max_epochs": 9}), 409,
                         "CONFLICT")
    assert "cannot be resumed" in error["message"] and error["details"]["status"] == "completed"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"max_epochs": 0}, "max_epochs"), ({"max_epochs": "ten"}, "max_epochs"), ({"epochs": 3}, "epochs"),
     ({"max_epochs": 10**9}, "max_epochs")],
)
def test_resume_body_is_validated(client, services, project_id, body, field) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="stopped", devices=["gpu:99"])
    error = assert_error(client.post(_run_url(project_id, run_dir.name, "resume"), json=body), 422, "VALIDATION_ERROR")
    assert field in error["details"]["fields"]


def test_resume_without_a_body_queues_the_run_again(client, services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="interrupted", devices=["gpu:99"])
    response = client.post(_run_url(project_id, run_dir.name, "resume"))
    assert response.status_code == 200, response.text
    run = response.json()["data"]
    assert run["status"] == "pending" and run["resumes"][-1]["from_epoch"] == 0


ENDPOINTS = [("GET", ""), ("GET", "metrics"), ("GET", "stream"), ("POST", "stop"), ("POST", "resume"), ("DELETE", "")]
HOSTILE_RUN_IDS = ["run-00000000", "run-../../x", "..%2f..%2fetc", "run-ABCDEFGH", "run-0000000%00", "run-%2e%2e",
                   "run-" + "a" * 80, "exp-00000000"]


@pytest.mark.parametrize("run_id", HOSTILE_RUN_IDS)
def test_unknown_or_hostile_run_ids_get_an_error_envelope_and_touch_nothing(client, project_id, tmp_path,
                                                                            run_id) -> None:
    before = sorted(p for p in tmp_path.rglob("*") if ".locks" not in p.parts)
    expected = (422, "VALIDATION_ERROR") if len(run_id) > 64 else (404, "NOT_FOUND")
    for method, action in ENDPOINTS:
        assert_error(client.request(method, _run_url(project_id, run_id, action)), *expected)
    assert sorted(p for p in tmp_path.rglob("*") if ".locks" not in p.parts) == before


@pytest.mark.parametrize(("method", "action"), ENDPOINTS)
def test_run_endpoints_of_an_unknown_project_are_not_found(client, method, action) -> None:
    assert_error(client.request(method, _run_url("proj-00000000", "run-00000000", action)), 404, "NOT_FOUND")


def test_get_with_wait_answers_when_the_run_has_ended(client, services, project_id) -> None:
    """``?wait=`` holds the request while the run is active and answers with the ended record."""
    import threading

    services.queue.shutdown()  # nobody supervises: the run ends when the test says so
    run_dir = make_run_folder(services.workspace, project_id, status="running")
    url = _run_url(project_id, run_dir.name)
    ended = threading.Timer(0.6, lambda: update_run(services.workspace, run_dir, lambda r: r.with_fields(status="stopped")))
    ended.start()
    try:
        started = time.monotonic()
        run = client.get(url, params={"wait": 30}).json()["data"]
        assert run["status"] == "stopped" and 0.5 < time.monotonic() - started < 10
    finally:
        ended.cancel()
    still = client.get(url, params={"wait": 0.3}).json()["data"]  # an ended run answers at once
    assert still["status"] == "stopped"
    assert_error(client.get(url, params={"wait": -1}), 422, "VALIDATION_ERROR")
    assert_error(client.get(url, params={"wait": 601}), 422, "VALIDATION_ERROR")


def test_a_run_recorded_by_an_older_version_is_served_whole(client, services) -> None:
    from tests.core.test_records import OLD_RUN

    project_id = services.projects.create("old runs").id
    run_dir = make_run_folder(services.workspace, project_id)
    atomic_write_json(run_dir / "run.json", {**OLD_RUN, "id": run_dir.name, "project_id": project_id,
                                             "experiment_id": run_dir.parent.parent.name})
    response = client.get(_run_url(project_id, run_dir.name))
    assert response.status_code == 200, response.text
    run = response.json()["data"]
    assert run["status"] == "completed" and run["best_epoch"] == 2 and "gpu_name" not in run
    assert run["resumes"] == [] and run["claimed_by"] is None and run["stopped_early"] is None
    assert set(run) == set(Run.__struct_fields__)
