"""A dataset as its ``dataset.json`` reads, served from the columnar index: no Python object per image until one is read.

Training, evaluation and export hand a task runtime the dataset as a read-only
``Mapping`` with ``dataset.json``'s keys. Parsing the document itself costs ~7 s
and ~3 GB per process (per DDP rank) at a million images; a ``DatasetView``
over the ``DatasetIndex`` (mapped back from its ``.dataset.index`` cache in
~0.1 s) answers the same keys, and its ``images`` make each image the
document's own dict only when it is read. Runtimes that want speed read the
columns through the view's methods instead (``subset_positions``,
``filenames``, ``annotations``): the built-in ones do.

The index leaves out the images it would not serve (an unsafe file name, an
invalid sha256, a repeated name: ``index_build.servable``), so a view does too;
none of them could be loaded as a file anyway.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from .document import VERSION
from .index import DatasetIndex, IndexCache, IndexedAnnotation, LazyImages
from .index_build import NO_CLASS_ID

KEYS: tuple[str, ...] = ("version", "task", "source", "classes", "split_names", "image_stats", "images")


@dataclass(frozen=True)
class Annotations:
    """The annotations of one type of some images, flat, in image then file order (one row per annotation)."""

    #: which of the images asked for each belongs to (an index into the positions passed, nondecreasing)
    owner: np.ndarray
    #: ``int64`` class ids; only meaningful where ``has_class_id``
    class_id: np.ndarray
    has_class_id: np.ndarray
    #: ``float64`` ``[n, 4]`` boxes as stored (``[x, y, w, h]``); NaN where not ``has_bbox``
    bbox: np.ndarray
    has_bbox: np.ndarray
    #: each one's ``class_name`` as a code into ``names`` (``-1``: it has none)
    name_code: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.owner)


class DatasetView(Mapping[str, Any]):
    """``dataset.json`` as a read-only mapping over its ``DatasetIndex`` (``view.index``); see the module docstring."""

    def __init__(self, index: DatasetIndex) -> None:
        self.index = index
        self._images: LazyImages[dict[str, Any]] = LazyImages(len(index), functools.partial(image_record, index))

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> DatasetView:
        """The view of a document in memory (tests, small callers): the index is built from its JSON."""
        return cls(DatasetIndex.from_json(msgspec.json.encode(dict(doc))))

    # -- the mapping ------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        index = self.index
        if key == "images":
            return self._images
        if key == "version":
            return VERSION
        if key == "task":
            return index.task
        if key == "classes":
            return list(index.classes)
        if key == "split_names":
            return list(index.split_names)
        if key in ("source", "image_stats"):  # copies: a caller's change must not reach the shared index
            return copy.deepcopy(index.source if key == "source" else index.image_stats)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(KEYS)

    def __len__(self) -> int:
        return len(KEYS)

    # -- columns, for runtimes that read many images at once ------------------------------------
    def subset_positions(self, split_index: int, subset: str) -> np.ndarray:
        """Positions (``dataset.json`` order) of the images whose ``split[split_index]`` is exactly ``subset``.

        Any string matches as stored (not only train/val/test); an image whose
        list is shorter than ``split_index + 1`` is in no subset.
        """
        matrix, table = self.index.split_lists()
        if subset not in table or not 0 <= split_index < matrix.shape[1]:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(matrix[:, split_index] == table.index(subset))

    def split_values(self, split_index: int, positions: np.ndarray | None = None) -> list[str]:
        """Each image's ``split[split_index]`` as stored (``none`` past a short list), in ``positions`` order (all: file order)."""
        matrix, table = self.index.split_lists()
        count = len(matrix) if positions is None else len(positions)
        if not 0 <= split_index < matrix.shape[1]:
            return ["none"] * count
        column = matrix[:, split_index] if positions is None else matrix[positions, split_index]
        values = [*table, "none"]  # code -1 (past a short list) reads the trailing "none"
        return [values[code] for code in column.tolist()]

    def filenames(self, positions: np.ndarray) -> list[str]:
        """The file names of the images at ``positions``, in that order."""
        arrays = self.index.arrays
        return _names(arrays["name_blob"], arrays["name_off"], np.asarray(positions, dtype=np.int64))

    def image_sizes(self, positions: np.ndarray) -> np.ndarray:
        """``int64`` ``[n, 2]``: the stored ``(width, height)`` of the images at ``positions``."""
        pos = np.asarray(positions, dtype=np.int64)
        return np.stack([self.index.arrays["width"][pos], self.index.arrays["height"][pos]], axis=1).astype(np.int64)

    def annotations(self, positions: np.ndarray, kind: str) -> Annotations:
        """The annotations of type ``kind`` of the images at ``positions`` (see ``Annotations``)."""
        a, types = self.index.arrays, self.index.meta["tables"]["ann_type"]
        pos = np.asarray(positions, dtype=np.int64)
        starts = a["ann_off"][pos]
        counts = a["ann_off"][pos + 1] - starts
        owner = np.repeat(np.arange(len(pos), dtype=np.int64), counts)
        rows = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()), dtype=np.int64)
        wanted = a["ann_type"][rows] == (types.index(kind) if kind in types else -1)
        owner, rows = owner[wanted], rows[wanted]
        class_id = a["ann_cid"][rows].astype(np.int64)
        if len(a["ann_bbox"]):
            bbox, has_bbox = a["ann_bbox"][rows].astype(np.float64), a["ann_hasbox"][rows].astype(bool)
        else:  # no annotation of the dataset has a box: the index keeps no column of NaNs
            bbox, has_bbox = np.full((len(rows), 4), np.nan), np.zeros(len(rows), dtype=bool)
        return Annotations(owner=owner, class_id=class_id, has_class_id=class_id != NO_CLASS_ID, bbox=bbox,
                           has_bbox=has_bbox, name_code=a["ann_cname"][rows].astype(np.int64),
                           names=list(self.index.meta["tables"]["ann_name"]))


def load_dataset_view(path: Path, task: str) -> DatasetView:
    """The view of the ``dataset.json`` at ``path`` in a worker process (an empty dataset when there is none).

    Through a fresh ``IndexCache``: the ``.dataset.index`` beside the file when
    it is of this version of it, else the index is built and that cache written.
    """
    index = IndexCache().get(path)
    return DatasetView(index if index is not None else DatasetIndex.empty(task))


def as_view(dataset: Mapping[str, Any]) -> DatasetView:
    """``dataset`` itself when it is a view (what core passes), else the view of that plain document."""
    return dataset if isinstance(dataset, DatasetView) else DatasetView.from_document(dataset)


def image_record(index: DatasetIndex, position: int) -> dict[str, Any]:
    """Image ``position`` as ``dataset.json`` holds it: the same keys and values (``source_subset`` only when set)."""
    image = index.image(position)
    record: dict[str, Any] = {
        "filename": image.filename, "width": image.width, "height": image.height, "size": image.size,
        "format": image.format, "sha256": image.sha256, "source_path": image.source_path, "split": list(image.split),
        "annotations": [_annotation(annotation) for annotation in image.annotations],
    }
    if image.source_subset is not None:
        record["source_subset"] = image.source_subset
    return record


def _annotation(annotation: IndexedAnnotation) -> dict[str, Any]:
    record: dict[str, Any] = {"type": annotation.type}
    if annotation.class_id is not None:
        record["class_id"] = annotation.class_id
    if annotation.class_name is not None:
        record["class_name"] = annotation.class_name
    if annotation.bbox is not None:
        record["bbox"] = list(annotation.bbox)
    return record


def _names(blob: np.ndarray, offsets: np.ndarray, positions: np.ndarray) -> list[str]:
    """File names at ``positions``: many are sliced from the blob decoded once (ASCII: byte offsets are character offsets)."""
    starts, ends = offsets[positions].tolist(), offsets[positions + 1].tolist()
    if len(positions) * 8 < len(offsets) - 1:  # a few: decode only theirs
        return [blob[s:e].tobytes().decode("utf-8", "surrogatepass") for s, e in zip(starts, ends, strict=True)]
    raw = blob.tobytes()
    if not blob.size or int(blob.max()) < 0x80:
        text = raw.decode("ascii")
        return [text[s:e] for s, e in zip(starts, ends, strict=True)]
    return [raw[s:e].decode("utf-8", "surrogatepass") for s, e in zip(starts, ends, strict=True)]
