"""Evaluation jobs on a really trained checkpoint: the worker's outcome, as the server reads it.

The job runs in this process, claimed the way ``modelyard evaluate`` claims it
when no server serves the workspace (``evaluate_or_follow``); the API, job
worker and e2e tests start it in a real worker process.
"""

from __future__ import annotations

import subprocess
import sys

import msgspec
import numpy as np
import pytest

from modelyard.core.errors import CheckpointNotFoundError, ConflictError, SplitNotFoundError, ValidationError
from modelyard.core.evaluation.index import ResultsQuery
from modelyard.core.evaluation.results import RESULTS_FILE, ResultsTable
from modelyard.core.evaluation.service import EvaluationService
from modelyard.core.evaluation.worker import run_evaluation
from modelyard.core.jobs.folder import WORKER_LOST, Claimant
from modelyard.core.jobs.foreground import evaluate_or_follow
from modelyard.core.jobs.kinds import EVALUATE
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.records import Evaluation, JobProgress
from modelyard.core.services import Services
from tests.conftest import TrainedRun
from tests.core.evaluation.numpy_reference import assert_metrics_match_reference


@pytest.fixture
def evaluations(services: Services) -> EvaluationService:
    return services.evaluations  # its queue is not started: jobs wait until the test runs them here


def _run(services: Services, evaluations: EvaluationService, run: TrainedRun, **request) -> Evaluation:
    record = evaluations.create(run.project_id, experiment_id=run.experiment_id, run_id=run.run_id, **request)
    assert record.status == "pending"
    folder = services.workspace.evaluations_dir(run.project_id) / record.id
    evaluate_or_follow(services.workspace, folder, services.plugins)
    return evaluations.get(run.project_id, record.id)


def _subset_files(services: Services, run: TrainedRun, subsets: set[str]) -> set[str]:
    dataset = read_json(services.workspace.dataset_json(run.project_id))
    return {image["filename"] for image in dataset["images"] if image["split"][0] in subsets}


def test_completed_evaluation_metrics_match_numpy_on_the_stored_results(services, evaluations, trained_run) -> None:
    record = _run(services, evaluations, trained_run, checkpoint="best", split_subset="test")
    assert record.status == "completed", record.error
    assert record.progress == JobProgress(done=record.num_images, total=record.num_images)
    folder = services.workspace.evaluations_dir(trained_run.project_id) / record.id
    table = ResultsTable.load(folder / RESULTS_FILE)
    assert set(table.filenames.tolist()) == _subset_files(services, trained_run, {"test"})
    assert_metrics_match_reference(msgspec.to_builtins(record.metrics), table)
    assert record.metrics.confusion_matrix.labels == ["circle", "square", "triangle"]
    assert record.metrics.top5_accuracy is None  # three classes only
    assert record.finished_at and record.started_at
    assert set(read_json(folder / "evaluation.json")) == set(Evaluation.__struct_fields__)  # the file is the record


def test_evaluating_a_list_of_subsets_covers_each_image_once(services, evaluations, trained_run) -> None:
    record = _run(services, evaluations, trained_run, checkpoint="last", split_subset=["val", "test"])
    assert record.status == "completed", record.error
    items, total = evaluations.results(trained_run.project_id, record.id, ResultsQuery(page_size=500))
    assert total == len(items) == record.num_images
    assert {item["filename"] for item in items} == _subset_files(services, trained_run, {"val", "test"})
    assert {item["subset"] for item in items} == {"val", "test"}
    for item in items:
        probabilities = [p["probability"] for p in item["probabilities"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert item["prediction"]["confidence"] == probabilities[0]
        assert item["correct"] == (item["prediction"]["class_id"] == item["ground_truth"]["class_id"])
        true_p = next((p["probability"] for p in item["probabilities"] if p["class_id"] == item["ground_truth"]["class_id"]))
        assert item["loss"] == pytest.approx(-np.log(true_p), rel=1e-4)


def test_images_of_a_class_the_model_never_saw_are_skipped_and_counted(services, evaluations, trained_run) -> None:
    path = services.workspace.dataset_json(trained_run.project_id)
    dataset = read_json(path)
    dataset["classes"].append("star")
    newcomer = dict(dataset["images"][0], filename="star_new.png", split=["test"],
                    annotations=[{"type": "label", "class_id": 3, "class_name": "star"}])
    (services.workspace.images_dir(trained_run.project_id) / "star_new.png").write_bytes(
        (services.workspace.images_dir(trained_run.project_id) / dataset["images"][0]["filename"]).read_bytes()
    )
    dataset["images"].append(newcomer)
    atomic_write_json(path, dataset)
    record = _run(services, evaluations, trained_run, split_subset="test")
    assert record.status == "completed", record.error
    assert record.skipped == 1
    assert record.num_images == len(_subset_files(services, trained_run, {"test"})) - 1


def test_unreadable_checkpoint_fails_the_evaluation_with_the_reason(services, evaluations, trained_run) -> None:
    record = evaluations.create(trained_run.project_id, experiment_id=trained_run.experiment_id,
                                run_id=trained_run.run_id, checkpoint="best")
    (trained_run.run_dir / "checkpoints" / "best.ckpt").write_bytes(b"not a checkpoint at all")
    evaluate_or_follow(services.workspace, services.workspace.evaluations_dir(trained_run.project_id) / record.id,
                       services.plugins)
    failed = evaluations.get(trained_run.project_id, record.id)
    assert failed.status == "failed"
    assert "best.ckpt" in failed.error.message and failed.metrics is None


def test_request_errors_name_what_is_missing(services, evaluations, trained_run) -> None:
    ids = {"experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id}
    (trained_run.run_dir / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(CheckpointNotFoundError):
        evaluations.create(trained_run.project_id, checkpoint="last", **ids)
    with pytest.raises(SplitNotFoundError):
        evaluations.create(trained_run.project_id, split_index=3, **ids)
    with pytest.raises(ValidationError) as info:
        evaluations.create(trained_run.project_id, split_subset=["test", "test"], **ids)
    assert info.value.field == "split_subset"
    with pytest.raises(ValidationError) as info:
        evaluations.create(trained_run.project_id, devices=["gpu:97"], **ids)
    assert info.value.field == "devices"
    assert evaluations.list(trained_run.project_id) == []  # nothing was written for a refused request


def test_a_subset_without_labelled_images_is_refused(services, evaluations, trained_run) -> None:
    path = services.workspace.dataset_json(trained_run.project_id)
    dataset = read_json(path)
    for image in dataset["images"]:
        if image["split"][0] == "test":
            image["split"] = ["none"]
    atomic_write_json(path, dataset)
    with pytest.raises(ConflictError) as info:
        evaluations.create(trained_run.project_id, experiment_id=trained_run.experiment_id,
                           run_id=trained_run.run_id, split_subset="test")
    assert info.value.details["field"] == "split_subset"


def test_evaluation_whose_worker_died_is_marked_failed(services, evaluations, trained_run) -> None:
    record = evaluations.create(trained_run.project_id, experiment_id=trained_run.experiment_id, run_id=trained_run.run_id)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    folder = services.workspace.evaluations_dir(trained_run.project_id) / record.id
    claimed = {"by": "server", "pid": gone.pid, "at": "2026-01-01T00:00:00Z"}
    atomic_write_json(folder / "evaluation.json", dict(read_json(folder / "evaluation.json"), status="running",
                                                       worker_pid=gone.pid, claimed_by=claimed))
    failed = evaluations.get(trained_run.project_id, record.id)
    assert failed.status == "failed"
    assert failed.error.message == WORKER_LOST


def test_a_pending_evaluation_waits_for_a_queue_and_says_so(services, evaluations, trained_run) -> None:
    """Nothing starts it without a server (the CLI runs its own jobs): it stays pending, never marked failed."""
    record = evaluations.create(trained_run.project_id, experiment_id=trained_run.experiment_id, run_id=trained_run.run_id)
    folder = services.workspace.evaluations_dir(trained_run.project_id) / record.id
    atomic_write_json(folder / "evaluation.json", dict(read_json(folder / "evaluation.json"), created_at="2020-01-01T00:00:00Z"))
    waiting = evaluations.get(trained_run.project_id, record.id)
    assert waiting.status == "pending" and waiting.queue_position == 1
    assert "no server is running" in waiting.waiting_reason


def test_a_job_runs_only_once_claimed(services, evaluations, trained_run) -> None:
    record = evaluations.create(trained_run.project_id, experiment_id=trained_run.experiment_id, run_id=trained_run.run_id)
    folder = services.workspace.evaluations_dir(trained_run.project_id) / record.id
    assert run_evaluation(services.workspace, folder, services.plugins) == "skipped"  # pending: nobody claimed it
    assert evaluations.get(trained_run.project_id, record.id).status == "pending"
    EVALUATE.job(services.workspace, folder).claim(Claimant.this_process("cli"))
    assert run_evaluation(services.workspace, folder, services.plugins) == "completed"


def test_worker_leaves_a_job_that_is_not_pending_alone(services, evaluations, trained_run) -> None:
    record = _run(services, evaluations, trained_run)
    folder = services.workspace.evaluations_dir(trained_run.project_id) / record.id
    before = (folder / "evaluation.json").read_bytes()
    assert run_evaluation(services.workspace, folder, services.plugins) == "skipped"
    assert (folder / "evaluation.json").read_bytes() == before
