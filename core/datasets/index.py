"""An in-memory index of one ``dataset.json`` so listing a page costs O(page), not O(dataset).

Built once per version of the file (its inode, mtime and size; atomic writes
always change the inode) and cached per path: every sort order is a
precomputed permutation, class and split memberships are integer arrays, so
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
from typing import Any

import msgspec
import numpy as np

from ..errors import CorruptDataError
from .document import NONE, SPLIT_VALUES, image_stats
from .naming import all_safe_names, is_safe_name

SORT_KEYS: tuple[str, ...] = ("filename", "class", "size")
_SPLIT_CODE = {value: code for code, value in enumerate(SPLIT_VALUES)}
_NONE_CODE = _SPLIT_CODE[NONE]
_LRU_SIZE = 32
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA256_LINES = re.compile(r"(?:[0-9a-f]{64}\n)*")


class IndexedAnnotation(msgspec.Struct, gc=False):
    type: str
    class_id: int | None = None
    class_name: str | None = None


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
        position = {name: i for i, name in enumerate(self.classes)}
        self.class_codes = np.fromiter(
            (position.get(image.class_name, -1) for image in images),  # type: ignore[arg-type]
            dtype=np.int32,
            count=len(images),
        )
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
        class_key = np.where(self.class_codes < 0, len(self.classes), self.class_codes)
        sizes = np.fromiter((image.size for image in self.images), dtype=np.int64, count=len(self.images))
        return {"filename": by_name, "class": np.lexsort((rank, class_key)), "size": np.lexsort((rank, sizes))}

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
        labelled = self.class_codes[self.class_codes >= 0]
        counts = np.bincount(labelled, minlength=len(self.classes))
        return {name: int(counts[i]) for i, name in enumerate(self.classes)}

    def split_distribution(self, split_index: int) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Images per subset, and per class per subset, of split ``split_index``."""
        codes = self.split_codes(split_index).astype(np.int64)
        totals = np.bincount(codes, minlength=len(SPLIT_VALUES))
        labelled = self.class_codes >= 0
        joint = np.bincount(
            self.class_codes[labelled].astype(np.int64) * len(SPLIT_VALUES) + codes[labelled],
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
            code = self.classes.index(filter_class) if filter_class in self.classes else -2
            mask = self.class_codes == code
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
