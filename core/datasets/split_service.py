"""``SplitService``: create, preview, list, read and delete splits stored inline in ``dataset.json``.

A split is a name in ``split_names`` plus one value per image in each image's
``split`` list (reference section 3). Create and preview run the same
assignment, so a preview is exactly what create would store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConflictError, SplitNotFoundError
from ..projects import ensure_no_active_run, validate_name
from ..registry import TaskRegistry
from ..workspace import Workspace
from .document import SPLIT_VALUES, class_name, image_classes
from .index import DatasetIndex, release_free_memory
from .index_build import strings
from .kinds import annotates_boxes
from .rewrite import NotStreamable, appended, list_texts, removed, rewrite_split_lists
from .split_vector import assign_codes, summary
from .splits import Assignment, Ratios, assign, assign_multilabel
from .store import DatasetStore

log = logging.getLogger(__name__)

SPLIT_NAME_MAX = 100


class SplitService:
    def __init__(self, workspace: Workspace, store: DatasetStore,
                 on_split_removed: Callable[[str, int], object] | None = None, tasks: TaskRegistry | None = None) -> None:
        self.workspace = workspace
        self.store = store
        #: told ``(project_id, split_index)`` after a deletion, under the project lock (experiments follow their split)
        self.on_split_removed = on_split_removed
        #: the registered tasks: a task whose annotations are boxes is split as multi-label data
        self.tasks = tasks

    def preview(self, project_id: str, ratios: Ratios, seed: int, stratified: bool = True) -> dict[str, Any]:
        """Stats, per-class distribution and warnings of the split ``create`` would make; writes nothing."""
        index = self.store.index(project_id)
        if annotates_boxes(self.tasks, index.task):
            sets = index.class_sets()
            result = assign_multilabel([(image.filename, found) for image, found in zip(index.images, sets, strict=True)],
                                       ratios, seed, stratified)
            return _summary(result, sets)
        if index.labels_are_classes():
            codes, warnings = assign_codes(index.class_codes, None, index.classes, ratios, seed, stratified,
                                           order=index.arrays["order_filename"])
            return summary(codes, index.class_codes, index.classes, warnings)  # type: ignore[return-value]
        items = [(image.filename, image.class_name) for image in index.images]
        result = assign(items, ratios, seed, stratified)
        return _summary(result, [_as_set(label) for _, label in items])

    def assignment(self, doc: dict[str, Any], ratios: Ratios, seed: int,
                   stratified: bool = True) -> tuple[Assignment, list[frozenset[str]]]:
        """What a split of ``doc`` with these ratios and seed assigns, and each image's classes.

        Box tasks are split as multi-label data (by the classes in each image), others by their one label.
        """
        if annotates_boxes(self.tasks, doc.get("task")):
            sets = [image_classes(image) for image in doc["images"]]
            return assign_multilabel([(image["filename"], found) for image, found in zip(doc["images"], sets, strict=True)],
                                     ratios, seed, stratified), sets
        items = [(image["filename"], class_name(image)) for image in doc["images"]]
        return assign(items, ratios, seed, stratified), [_as_set(label) for _, label in items]

    def _assignment(self, project_id: str, doc: dict[str, Any], ratios: Ratios, seed: int,
                    stratified: bool) -> tuple[Assignment, list[frozenset[str]]]:
        """``assignment``, vectorised on the index when one is loaded and describes ``doc`` image for image."""
        index = self.store.loaded_index(project_id)
        if (index is None or annotates_boxes(self.tasks, doc.get("task")) or len(index) != len(doc["images"])
                or not index.labels_are_classes()):
            return self.assignment(doc, ratios, seed, stratified)
        codes, warnings = assign_codes(index.class_codes, index.filename_rank(), index.classes, ratios, seed, stratified)
        subsets = [SPLIT_VALUES[code] for code in codes.tolist()]
        names = [None if code < 0 else index.classes[code] for code in index.class_codes.tolist()]
        return Assignment(subsets=subsets, warnings=warnings), [_as_set(name) for name in names]

    def create(self, project_id: str, name: str, ratios: Ratios, seed: int, stratified: bool = True) -> dict[str, Any]:
        """Append a split to the dataset; returns its index, name, stats, per-class distribution and warnings."""
        name = validate_name(name, field="name", max_len=SPLIT_NAME_MAX)
        with self.workspace.project_lock(project_id):
            streamed = self._create_streamed(project_id, name, ratios, seed, stratified)
            if streamed is not None:
                return streamed
            doc = self.store.load(project_id)
            if name in doc["split_names"]:
                raise ConflictError(f"A split named '{name}' already exists", {"name": name})
            if not doc["images"]:
                raise ConflictError("The dataset has no images to split; import some first", {"project_id": project_id})
            result, sets = self._assignment(project_id, doc, ratios, seed, stratified)
            for image, subset in zip(doc["images"], result.subsets, strict=True):
                image.setdefault("split", [])
                image["split"] += ["none"] * (len(doc["split_names"]) - len(image["split"]))  # repair short lists
                image["split"].append(subset)
            doc["split_names"].append(name)
            self.store.save(project_id, doc)
            split_index = len(doc["split_names"]) - 1
        return {"split_index": split_index, "name": name, **_summary(result, sets)}

    def list(self, project_id: str) -> list[dict[str, Any]]:
        index = self.store.index(project_id)
        return [self._describe(index, i, per_class=False) for i in range(len(index.split_names))]

    def get(self, project_id: str, split_index: int) -> dict[str, Any]:
        index = self.store.index(project_id)
        _check_index(index.split_names, split_index)
        return self._describe(index, split_index, per_class=True)

    def delete(self, project_id: str, split_index: int) -> dict[str, Any]:
        """Remove split ``split_index``; later splits move down by one (refused while a run is training)."""
        with self.workspace.project_lock(project_id):
            streamed = self._delete_streamed(project_id, split_index)
            if streamed is not None:
                return streamed
            doc = self.store.load(project_id)
            _check_index(doc["split_names"], split_index)
            ensure_no_active_run(self.workspace, project_id, "delete a split")
            name = doc["split_names"].pop(split_index)
            for image in doc["images"]:
                if split_index < len(image.get("split", ())):
                    del image["split"][split_index]
            self.store.save(project_id, doc)
            if self.on_split_removed is not None:
                self.on_split_removed(project_id, split_index)
        return {"split_index": split_index, "name": name, "deleted": True, "split_names": doc["split_names"]}

    # -- streamed: the index's columns and a rewrite of the split lists only (``rewrite.py``) ----------
    def _whole_index(self, project_id: str) -> DatasetIndex | None:
        """The index of ``dataset.json`` when it describes every image of the file in file order; else ``None``."""
        index = self.store.streamable_index(project_id)
        return index if index is not None and index.whole_file() and len(index) else None

    def _create_streamed(self, project_id: str, name: str, ratios: Ratios, seed: int,
                         stratified: bool) -> dict[str, Any] | None:
        """``create`` through the index and a streamed rewrite; ``None`` when it cannot (the caller reads the document)."""
        index = self._whole_index(project_id)
        if index is None:
            return None
        if name in index.split_names:
            raise ConflictError(f"A split named '{name}' already exists", {"name": name})
        if annotates_boxes(self.tasks, index.task):
            if not index.names_are_classes():
                return None
            sets = index.class_sets()
            names = strings(index.arrays["name_blob"], index.arrays["name_off"])
            result = assign_multilabel(list(zip(names, sets, strict=True)), ratios, seed, stratified)
            del names
            codes = np.array([SPLIT_VALUES.index(subset) for subset in result.subsets], dtype=np.int8)
            answer = _summary(result, sets)
        elif index.labels_are_classes():
            codes, warnings = assign_codes(index.class_codes, None, index.classes, ratios, seed, stratified,
                                           order=index.arrays["order_filename"])
            answer = summary(codes, index.class_codes, index.classes, warnings)
        else:
            return None
        matrix, table = index.split_lists()
        table += [value for value in SPLIT_VALUES if value not in table]
        value_codes = np.array([table.index(value) for value in SPLIT_VALUES], dtype=np.int16)
        splits = len(index.split_names)
        grown = appended(matrix, index.arrays["split_len"], splits, value_codes[codes], table.index("none"))
        split_names = [*index.split_names, name]
        if not self._rewrite(project_id, index, matrix, grown, table, split_names):
            return None
        return {"split_index": splits, "name": name, **answer}

    def _delete_streamed(self, project_id: str, split_index: int) -> dict[str, Any] | None:
        """``delete`` through the index and a streamed rewrite; ``None`` when it cannot."""
        index = self._whole_index(project_id)
        if index is None:
            return None
        _check_index(index.split_names, split_index)
        ensure_no_active_run(self.workspace, project_id, "delete a split")
        matrix, table = index.split_lists()
        split_names = list(index.split_names)
        name = split_names.pop(split_index)
        if not self._rewrite(project_id, index, matrix, removed(matrix, split_index), table, split_names):
            return None
        if self.on_split_removed is not None:
            self.on_split_removed(project_id, split_index)
        return {"split_index": split_index, "name": name, "deleted": True, "split_names": split_names}

    def _rewrite(self, project_id: str, index: DatasetIndex, old: np.ndarray, new: np.ndarray, table: list[str],
                 split_names: list[str]) -> bool:
        """Rewrite ``dataset.json`` with the ``new`` split lists and names, and adopt the updated index; ``False``: not streamable."""
        stats = index.file_stats()
        # made before the rename: a reader between the rename and the adoption would build the index from the file
        updated = index.with_split_lists(new, table, split_names)

        def update(header: dict[str, Any]) -> None:
            header["split_names"] = split_names
            header["image_stats"] = stats

        try:
            rewrite_split_lists(self.workspace.dataset_json(project_id), update, list_texts(old, table), list_texts(new, table))
        except NotStreamable as exc:
            log.info("dataset.json of %s rewritten whole: %s", project_id, exc)
            return False
        self.store.adopt_index(project_id, updated)
        release_free_memory()
        return True

    @staticmethod
    def _describe(index: DatasetIndex, split_index: int, per_class: bool) -> dict[str, Any]:
        stats, distribution = index.split_distribution(split_index)
        described: dict[str, Any] = {"split_index": split_index, "name": index.split_names[split_index], "stats": stats}
        if per_class:
            described["per_class"] = distribution
        return described


def _check_index(split_names: list[str], split_index: int) -> None:
    if not 0 <= split_index < len(split_names):
        raise SplitNotFoundError(
            f"Split {split_index} not found (the dataset has {len(split_names)} split(s))", {"split_index": split_index}
        )


def _as_set(label: str | None) -> frozenset[str]:
    return frozenset() if label is None else frozenset((label,))


def _summary(result: Assignment, class_sets: list[frozenset[str]]) -> dict[str, Any]:
    """Images per subset, and per class per subset (an image counts once for each class it holds)."""
    stats = dict.fromkeys(SPLIT_VALUES, 0)
    per_class: dict[str, dict[str, int]] = {}
    for subset, names in zip(result.subsets, class_sets, strict=True):
        stats[subset] += 1
        for label in names:
            per_class.setdefault(label, dict.fromkeys(SPLIT_VALUES, 0))[subset] += 1
    return {"stats": stats, "per_class": dict(sorted(per_class.items())), "warnings": result.warnings}
