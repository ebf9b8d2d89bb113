"""What every job kind's service shares (core/jobs/store.py): submit, find, read, list, delete."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.core.errors import EvaluationNotFoundError
from modelyard.core.ids import new_id
from modelyard.core.jobs.kinds import EVALUATE
from modelyard.core.jobs.queue import JobQueue
from modelyard.core.jobs.store import JobStore
from modelyard.core.settings import Settings
from modelyard.core.workspace import Workspace
from tests.helpers.run_fixtures import ensure_project


@pytest.fixture
def records(tmp_path: Path) -> tuple[JobStore, str]:
    workspace = Workspace(tmp_path / "ws")
    workspace.prepare()
    project_id = new_id("proj")
    ensure_project(workspace, project_id)
    queue = JobQueue(workspace, Settings(workspace=workspace.root, warm_workers=0))  # never started: jobs stay pending
    not_found = lambda job_id: EvaluationNotFoundError(f"Evaluation {job_id} not found", {"evaluation_id": job_id})  # noqa: E731
    return JobStore(workspace, queue, EVALUATE, workspace.evaluations_dir, not_found), project_id


def test_a_submitted_job_is_pending_with_the_fields_every_job_has_and_its_own(records) -> None:
    jobs, project_id = records
    record = jobs.submit(project_id, {"run_id": "run-aaaaaaaa", "batch_size": 8})
    assert record.id.startswith("eval-") and record.project_id == project_id
    assert record.status == "pending" and record.created_at.endswith("Z")
    assert (record.started_at, record.finished_at, record.error, record.worker_pid) == (None, None, None, None)
    assert (record.run_id, record.batch_size) == ("run-aaaaaaaa", 8)
    assert record.queue_position == 1  # waiting: its place is shown
    assert jobs.get(project_id, record.id).id == record.id
    assert [r.id for r in jobs.list(project_id)] == [record.id]


@pytest.mark.parametrize("job_id", ["eval-zzzzzzzz", "../../etc", "eval-../x", "run-aaaaaaaa", ""])
def test_an_unknown_or_hostile_id_is_the_kinds_not_found_error(records, job_id: str) -> None:
    jobs, project_id = records
    with pytest.raises(EvaluationNotFoundError):
        jobs.get(project_id, job_id)
    with pytest.raises(EvaluationNotFoundError):
        jobs.delete(project_id, job_id)


def test_delete_removes_the_job_folder(records) -> None:
    jobs, project_id = records
    job_id = jobs.submit(project_id, {}).id
    folder = jobs.delete(project_id, job_id)
    assert not folder.exists() and jobs.list(project_id) == []
    with pytest.raises(EvaluationNotFoundError):
        jobs.get(project_id, job_id)
