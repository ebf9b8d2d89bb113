"""``SplitService``: create, preview, list, read and delete splits stored inline in ``dataset.json``.

A split is a name in ``split_names`` plus one value per image in each image's
``split`` list (reference section 3). Create and preview run the same
assignment, so a preview is exactly what create would store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConflictError, SplitNotFoundError
from ..projects import ensure_no_active_run, validate_name
from ..registry import TaskRegistry
from ..workspace import Workspace
from .document import SPLIT_VALUES, class_name, image_classes
from .index import DatasetIndex
from .kinds import annotates_boxes
from .split_vector import assign_codes, summary
from .splits import Assignment, Ratios, assign, assign_multilabel
from .store import DatasetStore

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
            codes, warnings = assign_codes(index.class_codes, index.filename_rank(), index.classes, ratios, seed, stratified)
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
