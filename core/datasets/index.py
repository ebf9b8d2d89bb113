"""An in-memory index of one ``dataset.json`` so listing a page costs O(page), not O(dataset).

Built once per version of the file (its inode, mtime and size; atomic writes
always change the inode) and cached per path: every sort order is a
precomputed permutation, class and split memberships are integer arrays
(for detection, each class lists the images with any box of it, and each
image has a box count), so
a filtered page is a few vectorised numpy operations plus the page itself.
Recent filtered orderings are kept in a small LRU, so paging through one
result set does not redo the filtering.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np

from ..errors import CorruptDataError
from .document import NONE, SPLIT_VALUES, image_stats
from .naming import all_safe_names, is_safe_name

SORT_KEYS: tuple[str, ...] = ("filename", "class", "size", "num_boxes")
_SPLIT_CODE = {value: code for code, value in enumerate(SPLIT_VALUES)}
_NONE_CODE = _SPLIT_CODE[NONE]
_LRU_SIZE = 32
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA256_LINES = re.compile(r"(?:[0-9a-f]{64}\n)*")


class IndexedAnnotation(msgspec.Struct, gc=False):
    type: str
    class_id: int | None = None
    class_name: str | None = None
    bbox: tuple[float, float, float, float] | None = None


class IndexedImage(msgspec.Struct, gc=False):
    """One image of ``dataset.json``; unknown keys are ignored.

    Only immutable, untracked values (tuples, ``gc=False`` structs) so the
    garbage collector never walks a 100,000-image index.
    """

    filename: str
    width: int
    height: int
    size: int
    format: str
    sha256: str
    source_path: str
    split: tuple[str, ...] = ()
    annotations: tuple[IndexedAnnotation, ...] = ()
    source_subset: str | None = None

    @property
    def class_name(self) -> str | None:
        for annotation in self.annotations:
            if annotation.type == "label":
                return annotation.class_name
        return None

    @property
    def num_boxes(self) -> int:
        return sum(1 for annotation in self.annotations if annotation.type == "bbox")


class _Document(msgspec.Struct):
    version: int = 1
    task: str = "classification"
    source: dict[str, Any] | None = None
    classes: list[str] = msgspec.field(default_factory=list)
    split_names: list[str] = msgspec.field(default_factory=list)
    image_stats: dict[str, Any] = msgspec.field(default_factory=dict)
    images: list[IndexedImage] = msgspec.field(default_factory=list)


class DatasetIndex:
    """Read-only view of one dataset version with fast sorted, filtered pages."""

    def __init__(self, doc: _Document) -> None:
        images = _servable(doc.images)
        self.images = images
        self.by_name = {image.filename: i for i, image in enumerate(images)}
        self.task = doc.task
        self.source = doc.source
        self.classes = list(doc.classes)
        self.split_names = list(doc.split_names)
        stored = doc.image_stats
        self.image_stats = stored if stored.get("num_images") == len(images) else _stats_of(images)
        columns = _class_columns(images, self.classes)
        #: the class of each image's label (``-1``: none), as classification reads it
        self.class_codes = columns.label_codes
        #: how many boxes each image has (``0`` for classification)
        self.box_counts = columns.box_counts
        self._sort_class = columns.sort_class
        self._annotations_per_class = columns.annotations_per_class
        #: per class, the positions of the images that have it (as a label or in any box), ascending
        self._class_members = columns.members
        self._split_codes = [self._codes_of_split(k) for k in range(len(self.split_names))]
        self._folded_names = np.array([image.filename.casefold() for image in images], dtype=np.str_)
        self._orders = self._build_orders()
        self._lru: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._lru_lock = threading.Lock()

    @classmethod
    def empty(cls, task: str) -> DatasetIndex:
        """The index of a project that has imported nothing yet."""
        return cls(_Document(task=task, image_stats=image_stats([])))

    @classmethod
    def from_json(cls, data: bytes, name: str = "dataset.json") -> DatasetIndex:
        try:
            return cls(msgspec.json.decode(data, type=_Document))
        except msgspec.DecodeError as exc:
            raise CorruptDataError(f"{name} is corrupt and cannot be read ({exc})", {"file": name}) from exc

    def __len__(self) -> int:
        return len(self.images)

    def _build_orders(self) -> dict[str, np.ndarray]:
        names = [image.filename for image in self.images]
        by_name = np.array(sorted(range(len(names)), key=names.__getitem__), dtype=np.int64)
        rank = np.empty(len(names), dtype=np.int64)
        rank[by_name] = np.arange(len(names))
        sizes = np.fromiter((image.size for image in self.images), dtype=np.int64, count=len(self.images))
        return {
            "filename": by_name,
            "class": np.lexsort((rank, self._sort_class)),
            "size": np.lexsort((rank, sizes)),
            "num_boxes": np.lexsort((rank, self.box_counts)),
        }

    def _codes_of_split(self, split_index: int) -> np.ndarray:
        return np.fromiter(
            (
                _SPLIT_CODE.get(image.split[split_index], _NONE_CODE) if split_index < len(image.split) else _NONE_CODE
                for image in self.images
            ),
            dtype=np.int8,
            count=len(self.images),
        )

    def split_codes(self, split_index: int) -> np.ndarray:
        """``SPLIT_VALUES`` codes of every image in split ``split_index`` (missing or odd values count as none)."""
        return self._split_codes[split_index]

    def class_counts(self) -> dict[str, int]:
        """Annotations per class: images for classification (one label each), boxes for detection."""
        return {name: int(self._annotations_per_class[i]) for i, name in enumerate(self.classes)}

    def class_image_counts(self) -> dict[str, int]:
        """Images per class (an image with three boxes of one class counts once)."""
        return {name: len(self._class_members[i]) for i, name in enumerate(self.classes)}

    def class_sets(self) -> list[frozenset[str]]:
        """The classes of each image (its label, or the classes of its boxes), in image order."""
        sets: list[set[str]] = [set() for _ in self.images]
        for code, members in enumerate(self._class_members):
            name = self.classes[code]
            for position in members.tolist():
                sets[position].add(name)
        return [frozenset(found) for found in sets]

    def split_distribution(self, split_index: int) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Images per subset, and per class per subset (an image counts once for each class it has), of split ``split_index``."""
        codes = self.split_codes(split_index).astype(np.int64)
        totals = np.bincount(codes, minlength=len(SPLIT_VALUES))
        pair_class = np.repeat(np.arange(len(self.classes), dtype=np.int64), [len(m) for m in self._class_members])
        pair_image = np.concatenate(self._class_members) if self._class_members else np.zeros(0, dtype=np.int64)
        joint = np.bincount(
            pair_class * len(SPLIT_VALUES) + codes[pair_image],
            minlength=len(self.classes) * len(SPLIT_VALUES),
        ).reshape(len(self.classes), len(SPLIT_VALUES))
        stats = {value: int(totals[code]) for code, value in enumerate(SPLIT_VALUES)}
        per_class = {
            name: {value: int(joint[i, code]) for code, value in enumerate(SPLIT_VALUES)} for i, name in enumerate(self.classes)
        }
        return stats, per_class

    def select(
        self,
        sort_by: str = "filename",
        descending: bool = False,
        filter_class: str | None = None,
        filter_split: tuple[int, str] | None = None,
        search: str | None = None,
    ) -> np.ndarray:
        """Positions of the matching images in display order (cached for repeated pages)."""
        key = (sort_by, descending, filter_class, filter_split, search)
        with self._lru_lock:
            if (hit := self._lru.get(key)) is not None:
                self._lru.move_to_end(key)
                return hit
        selected = self._compute(sort_by, descending, filter_class, filter_split, search)
        with self._lru_lock:
            self._lru[key] = selected
            while len(self._lru) > _LRU_SIZE:
                self._lru.popitem(last=False)
        return selected

    def _compute(
        self, sort_by: str, descending: bool, filter_class: str | None, filter_split: tuple[int, str] | None, search: str | None
    ) -> np.ndarray:
        order = self._orders[sort_by]
        mask: np.ndarray | None = None
        if filter_class is not None:
            mask = np.zeros(len(self.images), dtype=bool)
            if filter_class in self.classes:
                mask[self._class_members[self.classes.index(filter_class)]] = True
        if filter_split is not None:
            split_index, subset = filter_split
            matches = self.split_codes(split_index) == _SPLIT_CODE[subset]
            mask = matches if mask is None else mask & matches
        if search:
            if "\x00" in search:  # numpy strings drop NULs; no file name has one
                found = np.zeros(len(self.images), dtype=bool)
            else:
                found = np.strings.find(self._folded_names, search.casefold()) >= 0
            mask = found if mask is None else mask & found
        selected = order if mask is None else order[mask[order]]
        return selected[::-1] if descending else selected


class _ClassColumns(NamedTuple):
    label_codes: np.ndarray
    box_counts: np.ndarray
    sort_class: np.ndarray
    annotations_per_class: np.ndarray
    members: list[np.ndarray]


def _class_columns(images: list[IndexedImage], classes: list[str]) -> _ClassColumns:
    """One pass over the annotations: label codes, box counts, the class a ``class`` sort uses, class memberships.

    An image sorts by its label's class, else by the first (lowest id) class of
    its boxes, else after every class. Annotations naming a class that is not
    in ``classes`` (a hand-edited file) are ignored.
    """
    position = {name: i for i, name in enumerate(classes)}
    no_class = len(classes)
    label_codes = [-1] * len(images)
    box_counts = [0] * len(images)
    sort_class = [no_class] * len(images)
    per_class = [0] * no_class
    pair_image: list[int] = []
    pair_class: list[int] = []
    for i, image in enumerate(images):
        annotations = image.annotations
        if not annotations:
            continue
        if len(annotations) == 1 and annotations[0].type == "label":  # classification: the common case, kept fast
            label = position.get(annotations[0].class_name, -1)  # type: ignore[arg-type]
            if label >= 0:
                label_codes[i] = sort_class[i] = label
                per_class[label] += 1
                pair_image.append(i)
                pair_class.append(label)
            continue
        label, found_label, boxes = -1, False, 0
        codes: set[int] = set()
        for annotation in annotations:
            if annotation.type == "label":
                if not found_label:  # the first label is the image's class (as ``IndexedImage.class_name``)
                    found_label = True
                    label = position.get(annotation.class_name, -1)  # type: ignore[arg-type]
            elif annotation.type == "bbox":
                boxes += 1
                code = position.get(annotation.class_name)  # type: ignore[arg-type]
                if code is not None:
                    per_class[code] += 1
                    codes.add(code)
        box_counts[i] = boxes
        if label >= 0:
            label_codes[i] = sort_class[i] = label
            per_class[label] += 1
            codes.add(label)
        elif codes:
            sort_class[i] = min(codes)
        for code in sorted(codes):
            pair_image.append(i)
            pair_class.append(code)
    images_of = np.array(pair_image, dtype=np.int64)
    classes_of = np.array(pair_class, dtype=np.int64)
    order = np.lexsort((images_of, classes_of))
    bounds = np.cumsum(np.bincount(classes_of, minlength=no_class))[:-1] if no_class else np.zeros(0, dtype=np.int64)
    members = np.split(images_of[order], bounds) if no_class else []
    return _ClassColumns(
        np.array(label_codes, dtype=np.int32), np.array(box_counts, dtype=np.int32), np.array(sort_class, dtype=np.int64),
        np.array(per_class, dtype=np.int64), members,
    )


def _stats_of(images: list[IndexedImage]) -> dict[str, Any]:
    """``image_stats`` recomputed, for a file whose stored statistics are missing or stale (hand-edited)."""
    return image_stats([{"width": i.width, "height": i.height, "format": i.format} for i in images])


def _servable(images: list[IndexedImage]) -> list[IndexedImage]:
    """Images whose name and hash are safe to use as file names (both become paths), first of each name.

    A hand-edited ``dataset.json`` could name ``../../x``; such entries are never indexed, so never served.
    """
    names = [image.filename for image in images]
    hashes = "".join(image.sha256 + "\n" for image in images)
    hashes_ok = hashes.count("\n") == len(images) and _SHA256_LINES.fullmatch(hashes)  # a hash holding "\n" is unsafe
    if len(set(names)) == len(names) and all_safe_names(names) and hashes_ok:
        return images  # the common case, checked in a few passes over joined strings
    seen: set[str] = set()
    kept = []
    for image in images:
        if is_safe_name(image.filename) and _SHA256.fullmatch(image.sha256) and image.filename not in seen:
            seen.add(image.filename)
            kept.append(image)
    return kept


class IndexCache:
    """One ``DatasetIndex`` per ``dataset.json`` path, rebuilt when the file changes."""

    def __init__(self, build: Callable[[bytes, str], DatasetIndex] = DatasetIndex.from_json) -> None:
        self._build = build
        self._entries: dict[Path, tuple[tuple[int, int, int], DatasetIndex]] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, path: Path) -> DatasetIndex | None:
        """The index of ``path`` as it is now, or ``None`` when the file does not exist."""
        with self._guard:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            try:
                handle = open(path, "rb")
            except FileNotFoundError:
                self._entries.pop(path, None)
                return None
            with handle:
                info = os.fstat(handle.fileno())
                version = (info.st_ino, info.st_mtime_ns, info.st_size)
                cached = self._entries.get(path)
                if cached is not None and cached[0] == version:
                    return cached[1]
                index = self._build(handle.read(), path.name)
            self._entries[path] = (version, index)
            return index

    def forget(self, path: Path) -> None:
        self._entries.pop(path, None)
