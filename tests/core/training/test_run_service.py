"""RunService (core/training/run_service.py): start, read, stop, resume and delete runs.

Runs are started for real (``create_run_folder`` through the service); the
checkpoint tests use copies of the session's tiny trained run, and the
extension test trains its extra epoch with the real engine, in process.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.core.errors import ConflictError, ExperimentNotFoundError, RunNotFoundError, ValidationError
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.records import RunResumeRecord
from modelyard.core.training.run_folder import EventLog, read_run, update_run
from tests.conftest import TINY_TRAINING_CONFIG, TrainedRun
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.run_fixtures import make_run_folder


@pytest.fixture
def experiment(services) -> tuple[str, str]:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    created = services.experiments.create(project_id, "tiny", config=TINY_TRAINING_CONFIG)
    return project_id, created["id"]


@pytest.fixture
def interrupted_run(trained_run: TrainedRun, services) -> TrainedRun:
    """The trained run as a worker that died after its last checkpoint leaves it: ``interrupted``."""
    update_run(services.workspace, trained_run.run_dir, lambda r: r.with_fields(status="interrupted"))
    return trained_run


class Evil:
    """A pickle that would create ``marker`` when unpickled by a careless loader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


# -- start --------------------------------------------------------------------------


def test_start_run_freezes_the_config_and_queues_a_pending_run(services, experiment) -> None:
    project_id, experiment_id = experiment
    record = services.runs.start_run(project_id, experiment_id)
    run_dir = services.runs.run_dir(project_id, record.id)
    assert record.status == "pending" and record.experiment_id == experiment_id
    frozen = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert frozen == services.experiments.get(project_id, experiment_id)["config"]
    assert frozen["training"]["max_epochs"] == record.progress.total_epochs == 2
    assert services.runs.get_run(project_id, record.id).queue_position == 1
    # Editing the experiment later never changes the run's frozen copy.
    services.experiments.update(project_id, experiment_id, {"config": {"training": {"max_epochs": 9}}})
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == frozen


def test_start_run_of_a_missing_experiment_is_not_found(services, experiment) -> None:
    project_id, _ = experiment
    with pytest.raises(ExperimentNotFoundError):
        services.runs.start_run(project_id, "exp-00000000")
    with pytest.raises(ExperimentNotFoundError):
        services.runs.start_run(project_id, "../../etc")


def test_start_run_validates_the_config_again(services, experiment) -> None:
    """The dataset changed since the experiment was saved: its split is gone."""
    project_id, experiment_id = experiment
    path = services.workspace.dataset_json(project_id)
    dataset = read_json(path)
    dataset["split_names"] = []
    atomic_write_json(path, dataset)
    with pytest.raises(ValidationError) as caught:
        services.runs.start_run(project_id, experiment_id)
    assert caught.value.field == "config.split_index"
    assert services.runs.list_runs(project_id, experiment_id) == []


def test_runs_of_an_experiment_are_listed_newest_first(services, experiment) -> None:
    project_id, experiment_id = experiment
    first = make_run_folder(services.workspace, project_id, experiment_id=experiment_id,
                            created_at="2026-01-01T00:00:00Z")
    second = make_run_folder(services.workspace, project_id, experiment_id=experiment_id,
                             created_at="2026-01-02T00:00:00Z")
    assert [r.id for r in services.runs.list_runs(project_id, experiment_id)] == [second.name, first.name]


# -- read ---------------------------------------------------------------------------


def test_get_run_adds_elapsed_time_of_a_finished_run(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="completed",
                              started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:01:30Z")
    run = services.runs.get_run(project_id, run_dir.name)
    assert run.elapsed_s == 90.0 and run.heartbeat_age_s is None and run.queue_position is None


def test_metrics_of_a_run_without_finished_epochs_are_empty(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id)
    assert services.runs.get_metrics(project_id, run_dir.name) == []


def test_unknown_run_id_is_not_found_in_an_existing_project(services, project_id) -> None:
    for run_id in ("run-00000000", "run-../../..", "", "exp-00000000"):
        with pytest.raises(RunNotFoundError):
            services.runs.get_run(project_id, run_id)


# -- stop ---------------------------------------------------------------------------


def test_stopping_a_pending_run_stops_it_without_a_worker(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="pending")
    run = services.runs.stop_run(project_id, run_dir.name)
    assert run.status == "stopped" and run.worker_pid is None and not run.killed
    assert [e["event"] for e in EventLog(services.workspace, run_dir).read()] == ["status", "end"]


def test_stopping_a_running_run_asks_its_worker_through_the_stop_file(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="running")
    run = services.runs.stop_run(project_id, run_dir.name)
    assert run.status == "running" and run.stop_requested is True
    assert (run_dir / "stop.request").is_file()


@pytest.mark.parametrize("status", ["completed", "failed", "stopped", "interrupted"])
def test_stopping_a_finished_run_is_a_conflict(services, project_id, status) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status=status)
    with pytest.raises(ConflictError, match="not running"):
        services.runs.stop_run(project_id, run_dir.name)


# -- resume ---------------------------------------------------------------------------


def test_resuming_a_completed_run_is_refused_with_a_clear_conflict(services, trained_run: TrainedRun) -> None:
    with pytest.raises(ConflictError, match="completed and cannot be resumed"):
        services.runs.resume_run(trained_run.project_id, trained_run.run_id)
    assert read_run(trained_run.run_dir).status == "completed"


@pytest.mark.parametrize("status", ["pending", "running"])
def test_resuming_an_active_run_is_a_conflict(services, project_id, status) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status=status)
    with pytest.raises(ConflictError, match=f"already {status}"):
        services.runs.resume_run(project_id, run_dir.name)


def test_resume_extends_max_epochs_and_trains_only_the_new_epochs(services, interrupted_run: TrainedRun) -> None:
    from modelyard.core.training.worker.engine import train_run

    run = interrupted_run
    before = services.runs.get_metrics(run.project_id, run.run_id)
    assert [m["epoch"] for m in before] == [1, 2]
    with pytest.raises(ConflictError, match="max_epochs"):
        services.runs.resume_run(run.project_id, run.run_id)  # all 2 epochs are trained already
    resumed = services.runs.resume_run(run.project_id, run.run_id, max_epochs=3)
    assert resumed.status == "pending" and resumed.progress.total_epochs == 3
    assert resumed.resumes[-1] == RunResumeRecord(at=resumed.resumes[-1].at, from_epoch=2, max_epochs=3,
                                                  checkpoint="checkpoints/last.ckpt")
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["training"]["max_epochs"] == 3
    resumed_from = EventLog(services.workspace, run.run_dir).last_id()

    assert train_run(services.workspace, run.run_dir, resume=True) == "completed"  # what the worker runs

    after = services.runs.get_metrics(run.project_id, run.run_id)
    assert [m["epoch"] for m in after] == [1, 2, 3]
    assert after[:2] == before
    new_events = EventLog(services.workspace, run.run_dir).read(after_id=resumed_from)
    assert [e["data"]["epoch"] for e in new_events if e["event"] == "epoch"] == [3]
    assert services.runs.get_run(run.project_id, run.run_id).status == "completed"


def test_resume_refuses_a_max_epochs_that_is_not_above_the_trained_epochs(services, interrupted_run) -> None:
    with pytest.raises(ValidationError) as caught:
        services.runs.resume_run(interrupted_run.project_id, interrupted_run.run_id, max_epochs=2)
    assert caught.value.field == "max_epochs"
    assert read_run(interrupted_run.run_dir).status == "interrupted"


def test_torn_last_checkpoint_falls_back_to_best_on_resume(services, interrupted_run) -> None:
    folder = interrupted_run.run_dir / "checkpoints"
    torn = (folder / "last.ckpt").read_bytes()[:1000]
    (folder / "last.ckpt").write_bytes(torn)
    resumed = services.runs.resume_run(interrupted_run.project_id, interrupted_run.run_id, max_epochs=4)
    assert resumed.status == "pending"
    assert resumed.resumes[-1].fallback_from == "last.ckpt"
    assert (folder / "last.ckpt").read_bytes() == (folder / "best.ckpt").read_bytes()
    assert (folder / "last.ckpt.corrupt").read_bytes() == torn


def test_resume_with_no_loadable_checkpoint_is_refused_and_changes_nothing(services, interrupted_run) -> None:
    folder = interrupted_run.run_dir / "checkpoints"
    for name in ("last.ckpt", "best.ckpt"):
        (folder / name).write_bytes((folder / name).read_bytes()[:500])
    before = (interrupted_run.run_dir / "run.json").read_bytes()
    with pytest.raises(ConflictError) as caught:
        services.runs.resume_run(interrupted_run.project_id, interrupted_run.run_id, max_epochs=4)
    assert "last.ckpt" in caught.value.message and "best.ckpt" in caught.value.message
    assert (interrupted_run.run_dir / "run.json").read_bytes() == before


def test_a_malicious_pickle_planted_as_checkpoint_is_never_executed(services, interrupted_run, tmp_path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Evil(marker))
    folder = interrupted_run.run_dir / "checkpoints"
    for name in ("last.ckpt", "best.ckpt"):
        (folder / name).write_bytes(payload)
    with pytest.raises(ConflictError, match="cannot be loaded safely"):
        services.runs.resume_run(interrupted_run.project_id, interrupted_run.run_id, max_epochs=4)
    assert not marker.exists()


def test_a_run_that_never_checkpointed_resumes_from_scratch(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="interrupted")
    resumed = services.runs.resume_run(project_id, run_dir.name)
    assert resumed.status == "pending"
    assert resumed.resumes[-1].checkpoint is None and resumed.resumes[-1].from_epoch == 0


def test_a_run_with_trained_epochs_but_no_checkpoint_is_not_restarted_silently(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="stopped")
    atomic_write_json(run_dir / "metrics.json", [{"epoch": 1, "val/loss": 1.0}])
    with pytest.raises(ConflictError, match="no checkpoint"):
        services.runs.resume_run(project_id, run_dir.name)


# -- delete ---------------------------------------------------------------------------


def test_deleting_a_running_run_is_a_conflict(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="running")
    with pytest.raises(ConflictError, match="stop it"):
        services.runs.delete_run(project_id, run_dir.name)
    assert (run_dir / "run.json").is_file()


@pytest.mark.parametrize("status", ["pending", "completed", "stopped"])
def test_deleting_a_run_removes_its_folder(services, project_id, status) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status=status)
    services.runs.delete_run(project_id, run_dir.name)
    assert not run_dir.exists()
    with pytest.raises(RunNotFoundError):
        services.runs.get_run(project_id, run_dir.name)


# -- events.jsonl ----------------------------------------------------------------------------------


def test_event_ids_continue_past_a_torn_last_line_and_the_next_event_is_not_swallowed(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="running")
    events = EventLog(services.workspace, run_dir)
    first = events.append("log", {"message": "one"})
    with open(events.path, "a", encoding="utf-8") as handle:
        handle.write('{"id": 99, "event": "progress", "da')  # a writer killed mid-line

    second = events.append("log", {"message": "two"})

    assert second == first + 1
    assert [(e["id"], e["data"]["message"]) for e in events.read()] == [(first, "one"), (second, "two")]


def test_an_unterminated_but_whole_last_event_keeps_its_id(services, project_id) -> None:
    run_dir = make_run_folder(services.workspace, project_id, status="running")
    events = EventLog(services.workspace, run_dir)
    first = events.append("log", {"message": "one"})
    with open(events.path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": first + 1, "event": "log", "data": {"message": "two"}}))  # no newline yet

    third = events.append("log", {"message": "three"})

    assert third == first + 2
    assert [e["id"] for e in events.read()] == [first, first + 1, third]


def test_the_last_id_is_found_from_the_end_of_a_log_longer_than_one_read(services, project_id, monkeypatch) -> None:
    from modelyard.core.jobs import events as event_log

    monkeypatch.setattr(event_log, "TAIL_CHUNK_BYTES", 64)  # every event line is longer than one chunk
    run_dir = make_run_folder(services.workspace, project_id, status="running")
    events = EventLog(services.workspace, run_dir)
    ids = [events.append("log", {"message": "x" * 100}) for _ in range(20)]

    assert ids == list(range(ids[0], ids[0] + 20))
    assert events.last_id() == ids[-1]


# -- the split a run trained on ---------------------------------------------------------------


def test_a_runs_split_is_found_by_the_name_recorded_when_it_started(tmp_path: Path) -> None:
    from modelyard.core.training.run_folder import trained_split_index

    assert trained_split_index(tmp_path, 2, ["a", "b", "c"]) == 2  # never started: the frozen index
    atomic_write_json(tmp_path / "reproducibility.json", {"split_index": 2, "split_name": "c"})
    assert trained_split_index(tmp_path, 2, ["a", "c"]) == 1  # "b" was deleted: "c" moved down
    with pytest.raises(ConflictError, match="'c'.*deleted"):
        trained_split_index(tmp_path, 2, ["a", "b"])


def test_resume_is_refused_when_the_runs_split_was_deleted(services, interrupted_run) -> None:
    services.splits.delete(interrupted_run.project_id, 0)
    with pytest.raises(ConflictError, match="cannot be resumed.*'default'.*deleted"):
        services.runs.resume_run(interrupted_run.project_id, interrupted_run.run_id, max_epochs=5)
    assert read_run(interrupted_run.run_dir).status == "interrupted"


def test_resume_is_refused_when_the_runs_split_moved(services, interrupted_run) -> None:
    from modelyard.core.datasets.splits import Ratios

    services.splits.create(interrupted_run.project_id, "later", Ratios(train=0.6, val=0.2, test=0.2), seed=1)
    record = read_json(interrupted_run.run_dir / "reproducibility.json")
    atomic_write_json(interrupted_run.run_dir / "reproducibility.json", {**record, "split_name": "later"})  # as if trained on it
    with pytest.raises(ConflictError, match="moved from index 0 to 1"):
        services.runs.resume_run(interrupted_run.project_id, interrupted_run.run_id, max_epochs=5)
