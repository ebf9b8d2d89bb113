"""Sorted, filtered pages of an evaluation's per-image results, fast at 100,000 rows.

A ``ResultsIndex`` is built once per results file: sort orders are numpy
argsorts computed on first use and cached, filters are boolean masks, so a
page is one mask lookup along a cached order plus slicing (well under a
millisecond of numpy work at 100k rows). ``ResultsIndexCache`` keeps the
indexes of the last few evaluations, keyed by the file's identity so a
rewritten file is re-read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import UnknownClassError, ValidationError
from .results import ResultsTable

SortBy = Literal["filename", "confidence", "error"]
SortOrder = Literal["asc", "desc"]
SORT_KEYS: tuple[str, ...] = ("filename", "confidence", "error")
#: direction used when the client gives no ``sort_order``: names A-Z, most confident first, worst error first
NATURAL_ORDER: dict[str, str] = {"filename": "asc", "confidence": "desc", "error": "desc"}
_FILTER_CACHE_SIZE = 32
#: Larger ``page_size`` requests get pages of this size (the reply says so), as for dataset images.
MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class ResultsQuery:
    """What a client asks for; ``sort_order`` ``None`` means the key's natural direction."""

    page: int = 1
    page_size: int = 50
    sort_by: str = "filename"
    sort_order: str | None = None
    filter_correct: bool | None = None
    filter_class: str | None = None
    filter_predicted: str | None = None

    def __post_init__(self) -> None:
        if self.page < 1 or self.page_size < 1:
            raise ValidationError("page and page_size must be at least 1", field="page" if self.page < 1 else "page_size")
        object.__setattr__(self, "page_size", min(self.page_size, MAX_PAGE_SIZE))  # capped, as image pages are


class ResultsIndex:
    """Answers ``ResultsQuery`` pages over one task's results table (``ResultsTable`` for classification)."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._class_ids = {name: i for i, name in enumerate(table.classes)}
        self._lock = threading.Lock()
        self._orders: dict[tuple[str, str], np.ndarray] = {}
        self._selections: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._filename_rank: np.ndarray | None = None

    def query(self, q: ResultsQuery) -> tuple[list[dict[str, Any]], int]:
        """The rows of page ``q.page`` and the total number of rows that match the filters."""
        if q.sort_by not in SORT_KEYS:
            raise ValidationError(f"sort_by must be one of {', '.join(SORT_KEYS)}", field="sort_by")
        direction = q.sort_order or NATURAL_ORDER[q.sort_by]
        if direction not in ("asc", "desc"):
            raise ValidationError("sort_order must be asc or desc", field="sort_order")
        gt = self._class_id(q.filter_class, "filter_class")
        pred = self._class_id(q.filter_predicted, "filter_predicted")
        selected = self._selection(q.sort_by, direction, q.filter_correct, gt, pred)
        start = (q.page - 1) * q.page_size
        rows = selected[start : start + q.page_size]
        return [self.table.row(int(i)) for i in rows], int(selected.shape[0])

    # -- internals ----------------------------------------------------------------
    def _class_id(self, name: str | None, field: str) -> int | None:
        if name is None:
            return None
        if name not in self._class_ids:
            raise UnknownClassError(name, list(self.table.classes), field=field)
        return self._class_ids[name]

    def _selection(self, sort_by: str, direction: str, correct: bool | None, gt: int | None, pred: int | None) -> np.ndarray:
        key = (sort_by, direction, correct, gt, pred)
        with self._lock:
            if key in self._selections:
                self._selections.move_to_end(key)
                return self._selections[key]
            order = self._order(sort_by, direction)
        mask = self._mask(correct, gt, pred)
        selected = order if mask is None else order[mask[order]]
        with self._lock:
            self._selections[key] = selected
            while len(self._selections) > _FILTER_CACHE_SIZE:
                self._selections.popitem(last=False)
        return selected

    def _mask(self, correct: bool | None, gt: int | None, pred: int | None) -> np.ndarray | None:
        t = self.table
        mask: np.ndarray | None = None
        for part in (
            None if correct is None else (t.correct == correct),
            None if gt is None else t.true_class_mask(gt),
            None if pred is None else t.predicted_class_mask(pred),
        ):
            if part is not None:
                mask = part if mask is None else (mask & part)
        return mask

    def _order(self, sort_by: str, direction: str) -> np.ndarray:
        """Row order for a key and direction; ties always fall back to filename A-Z (caller holds the lock)."""
        cached = self._orders.get((sort_by, direction))
        if cached is not None:
            return cached
        t = self.table
        if self._filename_rank is None:
            by_name = t.filename_order if t.filename_order is not None else np.argsort(t.filenames, kind="stable")
            self._orders[("filename", "asc")] = by_name
            self._orders[("filename", "desc")] = by_name[::-1].copy()
            rank = np.empty_like(by_name)
            rank[by_name] = np.arange(by_name.shape[0])
            self._filename_rank = rank
        if sort_by != "filename":
            values = t.sort_values(sort_by).astype(np.float64)
            self._orders[(sort_by, direction)] = np.lexsort((self._filename_rank, values if direction == "asc" else -values))
        return self._orders[(sort_by, direction)]


class ResultsIndexCache:
    """The indexes of the most recently read results files (thread-safe, bounded)."""

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, int, int], ResultsIndex] = OrderedDict()

    def get(self, path: Path, load: Callable[[Path], Any] = ResultsTable.load) -> ResultsIndex:
        """The index of the results file at ``path``, read with the task's ``load`` when not cached."""
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        index = ResultsIndex(load(path))
        with self._lock:
            for stale in [k for k in self._entries if k[0] == key[0]]:
                del self._entries[stale]
            self._entries[key] = index
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return index

    def forget(self, folder: Path) -> None:
        """Drop every cached index of files under ``folder`` (the evaluation was deleted)."""
        prefix = str(folder)
        with self._lock:
            for stale in [k for k in self._entries if k[0].startswith(prefix)]:
                del self._entries[stale]
