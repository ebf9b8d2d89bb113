"""The workspace on disk (DESIGN section 3): where every project file lives.

``Workspace`` is the only place that turns ids into paths. It refuses
malformed ids before any path is built, so a URL segment such as
``proj-../../etc`` can never name a folder outside ``projects/``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ProjectNotFoundError
from .ids import is_valid_id
from .jsonio import remove_stale_temp_files
from .locks import LockTable

log = logging.getLogger(__name__)


PROJECT_JSON = "project.json"

class Workspace:
    """Paths and locks of one workspace root."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.projects_dir = self.root / "projects"
        self.staging_dir = self.root / ".staging"
        self.locks = LockTable(self.root / ".locks")

    def prepare(self) -> None:
        """Create the folders and clean what a crashed process left behind (temp files, staging)."""
        self.projects_dir.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temp_files(self.projects_dir)
        if removed:
            log.warning("removed %d stale temp file(s) left by an interrupted write", removed)
        if self.staging_dir.exists():
            shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)

    # -- projects -------------------------------------------------------
    def project_dir(self, project_id: str) -> Path:
        """Folder of a project id (validated, not checked for existence)."""
        if not is_valid_id(project_id, "proj"):
            raise ProjectNotFoundError(project_id)
        return self.projects_dir / project_id

    def existing_project_dir(self, project_id: str) -> Path:
        """Folder of an existing project, or ``ProjectNotFoundError``."""
        folder = self.project_dir(project_id)
        if not (folder / PROJECT_JSON).is_file():
            raise ProjectNotFoundError(project_id)
        return folder

    def project_json(self, project_id: str) -> Path:
        """``project.json`` of an existing project, or ``ProjectNotFoundError``."""
        return self.existing_project_dir(project_id) / PROJECT_JSON

    def project_ids(self) -> list[str]:
        if not self.projects_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.projects_dir.iterdir() if is_valid_id(p.name, "proj") and (p / PROJECT_JSON).is_file()
        )

    @contextlib.contextmanager
    def project_lock(self, project_id: str) -> Iterator[None]:
        """Serialise read-modify-write of one project's files (threads and processes)."""
        self.project_dir(project_id)  # a malformed id is a 404, and must not name a lock file
        with self.locks.hold(project_id):
            yield

    # -- well-known files ------------------------------------------------
    def dataset_dir(self, project_id: str) -> Path:
        return self.project_dir(project_id) / "dataset"

    def dataset_json(self, project_id: str) -> Path:
        return self.dataset_dir(project_id) / "dataset.json"

    def images_dir(self, project_id: str) -> Path:
        return self.dataset_dir(project_id) / "images"

    def thumbs_dir(self, project_id: str) -> Path:
        return self.dataset_dir(project_id) / ".thumbs"

    def experiments_dir(self, project_id: str) -> Path:
        return self.project_dir(project_id) / "experiments"

    def evaluations_dir(self, project_id: str) -> Path:
        return self.project_dir(project_id) / "evaluations"

    def exports_dir(self, project_id: str) -> Path:
        return self.project_dir(project_id) / "exports"

    def new_staging_dir(self, label: str) -> Path:
        """A fresh private folder under ``.staging`` (removed at next start if left behind)."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.staging_dir))
