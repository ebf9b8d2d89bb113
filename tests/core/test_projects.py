"""ProjectService: project.json folders in the workspace (DESIGN section 3)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from modelyard.core.errors import ConflictError, ProjectNotFoundError, UnknownTaskError, ValidationError
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.projects import ProjectService
from modelyard.core import Task
from modelyard.core.registry import TaskRegistry
from modelyard.plugins.classification import CLASSIFICATION
from modelyard.core.workspace import Workspace
from tests.helpers.datasets import write_shapes_dataset
from tests.helpers.run_fixtures import make_run_folder

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws")
    ws.prepare()
    return ws


def classification_only() -> TaskRegistry:
    """The tasks a workspace with only the built-in classification task knows."""
    tasks = TaskRegistry()
    tasks.add(CLASSIFICATION)
    return tasks


@pytest.fixture
def projects(workspace: Workspace) -> ProjectService:
    return ProjectService(workspace, classification_only())


@pytest.fixture
def second_task(projects: ProjectService) -> str:
    """A second registered task in this test's own task registry."""
    projects.tasks.add(Task(id="counting", name="Counting"))
    return "counting"


def test_create_writes_project_json_with_id_and_utc_timestamps(projects: ProjectService, workspace: Workspace) -> None:
    project = projects.create("  Shapes  ", description="toy")
    assert re.fullmatch(r"proj-[a-z0-9]{8}", project.id)
    assert project.name == "Shapes"
    assert project.task == "classification"
    assert ISO_Z.match(project.created_at) and project.updated_at == project.created_at
    assert read_json(workspace.projects_dir / project.id / "project.json") == msgspec.to_builtins(project)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "empty"), ("   ", "empty"), ("a/b", "'/'"), ("a\\b", "'/'"), ("x" * 201, "at most 200"),
     ("a\x00b", "control"), ("line\nbreak", "control"), ("\x1b[31mred", "control")],
)
def test_create_refuses_bad_names_and_writes_nothing(
    projects: ProjectService, workspace: Workspace, name: str, reason: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)) as raised:
        projects.create(name)
    assert raised.value.details["field"] == "name"
    assert list(workspace.projects_dir.iterdir()) == []


def test_create_refuses_unknown_task_listing_supported_ones(projects: ProjectService, workspace: Workspace) -> None:
    with pytest.raises(UnknownTaskError) as raised:
        projects.create("x", task="segmentation")
    assert raised.value.details["available"] == ["classification"]
    assert raised.value.details["field"] == "task"
    assert list(workspace.projects_dir.iterdir()) == []


def test_failed_write_leaves_no_half_created_project(
    projects: ProjectService, workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(path: Path, obj: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("modelyard.core.projects.atomic_write_json", disk_full)
    with pytest.raises(OSError):
        projects.create("x")
    assert list(workspace.projects_dir.iterdir()) == []


def test_list_is_ordered_by_creation_time(projects: ProjectService, workspace: Workspace) -> None:
    created = [projects.create(n) for n in ("a", "b", "c")]
    for project, stamp in zip(created, ("2026-01-03T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")):
        path = workspace.projects_dir / project.id / "project.json"
        atomic_write_json(path, {**read_json(path), "created_at": stamp})
    assert [p.name for p in projects.list()] == ["b", "c", "a"]


def test_list_skips_a_broken_project_and_logs_it(
    projects: ProjectService, workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    good, broken = projects.create("good"), projects.create("broken")
    (workspace.projects_dir / broken.id / "project.json").write_text("{ torn")
    with caplog.at_level(logging.WARNING):
        listed = projects.list()
    assert [p.id for p in listed] == [good.id]
    assert broken.id in caplog.text


def test_get_of_malformed_or_missing_ids_is_not_found(projects: ProjectService, workspace: Workspace) -> None:
    for bad in ("../x", "proj-../../etc", "proj-AAAAAAAA", "proj-abcdefgh\n", "proj-zzzzzzzz"):
        with pytest.raises(ProjectNotFoundError):
            projects.get(bad)
        with pytest.raises(ProjectNotFoundError):
            projects.update(bad, {"name": "x"})
        with pytest.raises(ProjectNotFoundError):
            projects.delete(bad)
    # Only the well-formed id ever named a lock file; nothing else appeared anywhere.
    assert sorted(p.name for p in (workspace.root / ".locks").iterdir()) == ["proj-zzzzzzzz.lock"]
    assert sorted(p.name for p in workspace.root.iterdir()) == [".locks", ".staging", "projects"]
    assert list(workspace.projects_dir.iterdir()) == []


def test_update_changes_name_and_description_and_bumps_updated_at(
    projects: ProjectService, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = projects.create("old")
    monkeypatch.setattr("modelyard.core.projects.utc_now_iso", lambda: "2099-01-01T00:00:00Z")
    updated = projects.update(project.id, {"name": "new", "description": "about"})
    assert (updated.name, updated.description) == ("new", "about")
    assert updated.created_at == project.created_at
    assert updated.updated_at == "2099-01-01T00:00:00Z"
    assert projects.get(project.id) == updated


def test_task_can_change_while_the_project_has_no_dataset(projects: ProjectService, second_task: str) -> None:
    project = projects.create("x")
    assert projects.update(project.id, {"task": second_task}).task == second_task


def test_task_cannot_change_once_the_project_has_a_dataset(
    projects: ProjectService, workspace: Workspace, second_task: str
) -> None:
    project = projects.create("x")
    write_shapes_dataset(workspace.project_dir(project.id), per_class=1, size=16, num_classes=1)
    with pytest.raises(ConflictError, match="dataset"):
        projects.update(project.id, {"task": second_task})
    assert projects.get(project.id).task == "classification"
    # Re-sending the current task is not a change and stays allowed.
    assert projects.update(project.id, {"task": "classification", "name": "y"}).name == "y"


@pytest.mark.parametrize("status", ["pending", "running"])
def test_delete_is_refused_while_a_run_is_active(projects: ProjectService, workspace: Workspace, status: str) -> None:
    project = projects.create("x")
    run_id = make_run_folder(workspace, project.id, status=status).name
    with pytest.raises(ConflictError) as raised:
        projects.delete(project.id)
    assert raised.value.details == {"active_runs": [run_id]}
    assert (workspace.projects_dir / project.id / "project.json").is_file()


@pytest.mark.parametrize("status", ["completed", "failed", "stopped", "interrupted"])
def test_delete_removes_the_folder_once_runs_are_finished(
    projects: ProjectService, workspace: Workspace, status: str
) -> None:
    project = projects.create("x")
    make_run_folder(workspace, project.id, status=status)
    projects.delete(project.id)
    assert not (workspace.projects_dir / project.id).exists()
    assert list(workspace.staging_dir.iterdir()) == []
    with pytest.raises(ProjectNotFoundError):
        projects.get(project.id)
