"""Typed records: what core reads and writes and the API serves, forgiving of other versions' files."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from modelyard.core.errors import CorruptDataError
from modelyard.core.jobs.kinds import EVALUATE, EXPORT, TRAIN
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.projects import ProjectService
from modelyard.core.records import (
    Evaluation,
    Export,
    JobError,
    JobProgress,
    Project,
    Run,
    RunProgress,
    read_record,
)
from modelyard.core.training.run_folder import read_run
from modelyard.core.workspace import Workspace
from tests.core.test_projects import classification_only

#: run.json as the first released version wrote it: no claim, no worker start time, no precision, no early
#: stop, no resumes, and a field this version no longer has.
OLD_RUN = {
    "id": "run-0ld00001", "experiment_id": "exp-0ld00001", "project_id": "proj-0ld00001", "status": "completed",
    "created_at": "2025-01-02T03:04:05Z", "started_at": "2025-01-02T03:04:06Z", "finished_at": "2025-01-02T03:05:00Z",
    "devices": ["cpu"], "worker_pid": 4242,
    "progress": {"epoch": 2, "total_epochs": 2, "step": 5, "steps_per_epoch": 5},
    "latest_metrics": {"epoch": 2, "val/loss": 0.5}, "best_metrics": {"epoch": 2, "val/loss": 0.5}, "best_epoch": 2,
    "monitor": "val/loss", "checkpoints": {"best": "checkpoints/best.ckpt", "last": "checkpoints/last.ckpt"},
    "error": None, "gpu_name": "retired field",
}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.prepare()
    return ws


def test_an_old_run_record_reads_with_defaults_for_what_it_lacks_and_ignores_what_this_version_dropped(
        tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "run.json", OLD_RUN)
    run = read_run(tmp_path)
    assert run.status == "completed" and run.best_epoch == 2 and run.checkpoints.best == "checkpoints/best.ckpt"
    assert run.progress == RunProgress(epoch=2, total_epochs=2, step=5, steps_per_epoch=5)
    assert run.claimed_by is None and run.worker_started is None and run.precision is None
    assert run.stopped_early is None and run.resumes == [] and run.killed is False and run.num_processes == 1
    assert not hasattr(run, "gpu_name")


def test_old_evaluation_export_and_project_records_read(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "evaluation.json", {
        "id": "eval-0ld00001", "experiment_id": "exp-1", "run_id": "run-1", "status": "failed",
        "created_at": "2025-01-01T00:00:00Z", "progress": {"done": 3, "total": 9},
        "error": {"type": "WorkerLost", "message": "worker exited unexpectedly"}, "obsolete": [1, 2]})
    evaluation = read_record(tmp_path / "evaluation.json", Evaluation)
    assert evaluation.progress == JobProgress(done=3, total=9) and evaluation.metrics is None
    assert evaluation.error == JobError("WorkerLost", "worker exited unexpectedly") and evaluation.split_subset == "test"

    atomic_write_json(tmp_path / "export.json", {"id": "export-0ld00001", "status": "pending", "format": "torchscript"})
    export = read_record(tmp_path / "export.json", Export)
    assert export.format == "torchscript" and export.options == {} and export.verification_failed is False

    atomic_write_json(tmp_path / "project.json", {"id": "proj-0ld00001", "name": "old", "created_at": "2025-01-01T00:00:00Z"})
    project = read_record(tmp_path / "project.json", Project)
    assert project.task == "classification" and project.description == ""


def test_an_old_project_lists_and_updates_through_the_service(workspace: Workspace) -> None:
    folder = workspace.project_dir("proj-0ld00001")
    folder.mkdir(parents=True)
    atomic_write_json(folder / "project.json", {"id": "proj-0ld00001", "name": "old", "created_at": "2025-01-01T00:00:00Z",
                                                "owner": "dropped"})
    projects = ProjectService(workspace, classification_only())
    assert [p.name for p in projects.list()] == ["old"]
    updated = projects.update("proj-0ld00001", {"description": "now typed"})
    assert read_json(folder / "project.json") == msgspec.to_builtins(updated)


def test_a_record_that_is_not_one_is_corrupt_and_named(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"id": "run-x", "status": 3}', encoding="utf-8")
    with pytest.raises(CorruptDataError, match="run.json"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(CorruptDataError, match="run.json"):
        read_run(tmp_path)


def test_derived_fields_are_never_stored(workspace: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "run-d3r1ved0"
    folder.mkdir()
    job = TRAIN.job(workspace, folder)
    job.write(Run(id=folder.name, status="pending", queue_position=3, waiting_reason="gpu:0 is taken", elapsed_s=1.5,
                  heartbeat_age_s=0.2))
    stored = read_json(folder / "run.json")
    assert {name: stored[name] for name in Run.DERIVED} == dict.fromkeys(Run.DERIVED)


def test_fields_set_from_plain_values_are_validated_against_their_types() -> None:
    run = Run(id="run-x", status="running")
    updated = run.with_fields(progress={"epoch": 1, "total_epochs": 3}, error={"type": "E", "message": "m"})
    assert updated.progress == RunProgress(epoch=1, total_epochs=3) and updated.error == JobError("E", "m")
    assert run.progress == RunProgress()  # a copy: the original is unchanged
    with pytest.raises(msgspec.ValidationError):
        run.with_fields(progress={"epoch": "one"})
    with pytest.raises(TypeError, match="no field"):
        run.with_fields(progres={"epoch": 1})  # a misspelt field would otherwise vanish


@pytest.mark.parametrize("kind", [TRAIN, EVALUATE, EXPORT], ids=lambda k: k.name)
def test_every_job_kind_reads_and_writes_its_own_record_type(kind, workspace: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / f"{kind.prefix}-abcdefgh"
    folder.mkdir()
    job = kind.job(workspace, folder)
    job.write(kind.record_type(id=folder.name, status="pending"))
    assert type(job.read()) is kind.record_type
    assert job.update(lambda record: record.with_fields(status="stopped")).status == "stopped"
