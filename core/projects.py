"""Projects: create, list, read, update and delete ``project.json`` folders."""

from __future__ import annotations

import logging
import shutil
import unicodedata
from typing import TYPE_CHECKING, Any

from .errors import ConflictError, ModelyardError, ProjectNotFoundError, ValidationError
from .ids import new_id
from .jsonio import atomic_write_json
from .records import Project, read_record
from .registry import TaskRegistry
from .tasks import check_task
from .timeutil import utc_now_iso
from .training.run_folder import ACTIVE_STATUSES, iter_run_dirs, read_run
from .workspace import PROJECT_JSON, Workspace

if TYPE_CHECKING:
    from .datasets.store import DatasetStore

log = logging.getLogger(__name__)

NAME_MAX = 200
DESCRIPTION_MAX = 5000


def validate_name(name: str, field: str = "name", max_len: int = NAME_MAX) -> str:
    """A display name: 1..max_len characters, no control characters, no path separators."""
    # Control characters are refused anywhere, even where strip() would drop them (a leading tab),
    # so the rule is one the OpenAPI pattern can state exactly (api/openapi.py NAME_PATTERN).
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise ValidationError(f"{field} must not contain control characters", field=field)
    cleaned = name.strip()
    if not cleaned:
        raise ValidationError(f"{field} must not be empty", field=field)
    if len(cleaned) > max_len:
        raise ValidationError(f"{field} must be at most {max_len} characters (got {len(cleaned)})", field=field)
    if "/" in cleaned or "\\" in cleaned:
        raise ValidationError(f"{field} must not contain '/' or '\\'", field=field)
    return cleaned


def validate_description(description: str, field: str = "description") -> str:
    if len(description) > DESCRIPTION_MAX:
        raise ValidationError(f"{field} must be at most {DESCRIPTION_MAX} characters", field=field)
    if "\x00" in description:
        raise ValidationError(f"{field} must not contain NUL characters", field=field)
    return description


def active_runs(workspace: Workspace, project_id: str) -> list[str]:
    """Ids of the project's runs that are pending or running (they block destructive changes)."""
    active = []
    for run_dir in iter_run_dirs(workspace, project_id):
        try:
            status = read_run(run_dir).status
        except (OSError, ModelyardError):
            continue
        if status in ACTIVE_STATUSES:
            active.append(run_dir.name)
    return sorted(active)


def ensure_no_active_run(workspace: Workspace, project_id: str, action: str) -> None:
    """Raise ``ConflictError`` when a run of the project is training."""
    if runs := active_runs(workspace, project_id):
        raise ConflictError(f"Cannot {action} while a run is training: {', '.join(runs)}", {"active_runs": runs})


def read_project(workspace: Workspace, project_id: str) -> Project:
    """``project.json`` of an existing project (``ProjectNotFoundError`` otherwise)."""
    return read_record(workspace.project_json(project_id), Project)


class ProjectService:
    def __init__(self, workspace: Workspace, tasks: TaskRegistry, store: DatasetStore | None = None) -> None:
        from .datasets.store import DatasetStore  # it reads projects through this module

        self.workspace = workspace
        self.tasks = tasks
        #: the server's shared dataset store (one index per dataset version); its own when none is given
        self.store = store if store is not None else DatasetStore(workspace)

    def list(self) -> list[Project]:
        projects = []
        for project_id in self.workspace.project_ids():
            try:
                projects.append(self.get(project_id))
            except Exception as exc:  # a broken project must not hide the others
                log.warning("skipping project %s in listing: %s", project_id, exc)
        return sorted(projects, key=lambda p: (p.created_at, p.id))

    def create(self, name: str, task: str = "classification", description: str = "") -> Project:
        name = validate_name(name)
        check_task(task, self.tasks)
        description = validate_description(description)
        self.workspace.projects_dir.mkdir(parents=True, exist_ok=True)
        while True:
            project_id = new_id("proj")
            folder = self.workspace.project_dir(project_id)
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        now = utc_now_iso()
        project = Project(id=project_id, name=name, task=task, description=description, created_at=now, updated_at=now)
        with self.workspace.project_lock(project_id):
            try:
                atomic_write_json(folder / PROJECT_JSON, project)
            except BaseException:
                folder.rmdir()  # leave no nameless folder behind (e.g. disk full)
                raise
        return project

    def get(self, project_id: str) -> Project:
        try:
            return read_project(self.workspace, project_id)
        except FileNotFoundError:  # never existed, or deleted by a concurrent request
            raise ProjectNotFoundError(project_id) from None

    def update(self, project_id: str, changes: dict[str, Any]) -> Project:
        with self.workspace.project_lock(project_id):
            folder = self.workspace.existing_project_dir(project_id)
            project = read_record(folder / PROJECT_JSON, Project)
            if "name" in changes:
                project.name = validate_name(changes["name"])
            if "description" in changes:
                project.description = validate_description(changes["description"])
            if "task" in changes and changes["task"] != project.task:
                check_task(changes["task"], self.tasks)
                if self._has_dataset(project_id):
                    raise ConflictError("The task cannot change once the project has a dataset; clear the dataset first")
                project.task = changes["task"]
            project.updated_at = utc_now_iso()
            atomic_write_json(folder / PROJECT_JSON, project)
            return project

    def delete(self, project_id: str) -> None:
        with self.workspace.project_lock(project_id):
            folder = self.workspace.existing_project_dir(project_id)
            ensure_no_active_run(self.workspace, project_id, "delete the project")
            # Rename first so a crash mid-delete never leaves a half-project that still lists.
            trash = self.workspace.new_staging_dir(f"delete-{project_id}")
            folder.rename(trash / project_id)
            shutil.rmtree(trash, ignore_errors=True)

    def _has_dataset(self, project_id: str) -> bool:
        """Whether the project holds images (its dataset's index has any)."""
        return len(self.store.index(project_id)) > 0
