"""Where a project's dataset lives: ``dataset.json`` read and written whole (or streamed, ``rewrite.py``), and its cached index.

Writers hold ``workspace.project_lock`` and go through ``load``/``save``;
readers use ``index`` (no lock: the file is replaced atomically, and the index
is rebuilt when it changes).
"""

from __future__ import annotations

from typing import Any

from ..errors import CorruptDataError
from ..jsonio import atomic_write_json, read_json
from ..projects import read_project
from ..workspace import Workspace
from .commit import DatasetPaths
from .document import empty_dataset, image_stats
from .index import DatasetIndex, IndexCache


class DatasetStore:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._indexes = IndexCache()

    def paths(self, project_id: str) -> DatasetPaths:
        return DatasetPaths(
            json=self.workspace.dataset_json(project_id),
            images=self.workspace.images_dir(project_id),
            thumbs=self.workspace.thumbs_dir(project_id),
        )

    def task(self, project_id: str) -> str:
        """The task of an existing project (``ProjectNotFoundError`` otherwise)."""
        return read_project(self.workspace, project_id).task

    def load(self, project_id: str) -> dict[str, Any]:
        """The dataset document (an empty one before the first import). Call under the project lock to modify it."""
        task = self.task(project_id)
        path = self.workspace.dataset_json(project_id)
        if not path.is_file():
            return empty_dataset(task)
        doc: dict[str, Any] = read_json(path)
        doc.setdefault("split_names", [])
        doc.setdefault("classes", [])
        doc.setdefault("images", [])
        return doc

    def save(self, project_id: str, doc: dict[str, Any]) -> None:
        """Write ``doc`` atomically (image statistics refreshed). Call under the project lock."""
        doc["image_stats"] = image_stats(doc["images"])
        atomic_write_json(self.workspace.dataset_json(project_id), doc)

    def loaded_index(self, project_id: str) -> DatasetIndex | None:
        """The index of the current ``dataset.json`` if one is already in memory (a writer's shortcut; never builds)."""
        return self._indexes.current(self.workspace.dataset_json(project_id))

    def adopt_index(self, project_id: str, index: DatasetIndex) -> None:
        """Take ``index`` as that of the ``dataset.json`` just rewritten (by a streamed writer, under the project lock)."""
        self._indexes.put(self.workspace.dataset_json(project_id), index)

    def streamable_index(self, project_id: str) -> DatasetIndex | None:
        """The index a streamed writer starts from: ``None`` when there is no ``dataset.json`` or it does not read.

        A corrupt file is left to the whole-document path, which says what is wrong as it always did.
        """
        if not self.workspace.dataset_json(project_id).is_file():
            return None
        try:
            return self.index(project_id)
        except CorruptDataError:
            return None

    def index(self, project_id: str) -> DatasetIndex:
        """The index of the project's current dataset (an empty one before the first import)."""
        self.workspace.existing_project_dir(project_id)
        index = self._indexes.get(self.workspace.dataset_json(project_id))
        return index if index is not None else DatasetIndex.empty(self.task(project_id))
