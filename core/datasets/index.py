"""A columnar in-memory index of one ``dataset.json`` so listing a page costs O(page), not O(dataset).

Built once per version of the file and kept as numpy columns (names and paths
as UTF-8 blobs with offsets, hashes as bytes, split values and annotations as
small-integer codes), never as one Python object per image: a million images
take ~150 MB and load from the on-disk cache (``index_cache.py``) in a fraction
of a second. Every sort order is a precomputed permutation, class and split
memberships are integer arrays (for detection, each class lists the images
with any box of it, and each image has a box count), so a filtered page is a
few vectorised numpy operations plus the page itself. Recent filtered
orderings are kept in a small LRU, so paging through one result set does not
redo the filtering. ``images[i]`` materialises one image when a page needs it.
"""

from __future__ import annotations

import bisect
import ctypes
import io
import operator
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import numpy as np

from .document import NONE, SPLIT_VALUES, image_stats
from .index_build import NO_CLASS_ID, SHA256, RawColumns, read_columns, servable, strings
from .naming import all_safe_names
from . import index_cache

log = logging.getLogger(__name__)

SORT_KEYS: tuple[str, ...] = ("filename", "class", "size", "num_boxes")
_SPLIT_CODE = {value: code for code, value in enumerate(SPLIT_VALUES)}
_NONE_CODE = _SPLIT_CODE[NONE]
_LRU_SIZE = 32
_Image = TypeVar("_Image")
#: ``owners_of``'s bit table: 2**22 entries, so a thousand digests among a million images leave a few hundred candidates
_HASH_BITS = (1 << 22) - 1
#: Per-image columns (first axis = image), filtered together when unservable images are dropped.
_PER_IMAGE = ("sha", "width", "height", "size", "format", "subset", "split_len", "split_mat")
_PER_ANNOTATION = ("ann_type", "ann_cid", "ann_cname", "ann_bbox", "ann_hasbox")


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


class DatasetIndex:
    """Read-only view of one dataset version with fast sorted, filtered pages (``arrays`` + ``meta`` are its cache)."""

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.arrays = arrays
        self.meta = meta
        self.task: str = meta["task"]
        self.source: dict[str, Any] | None = meta["source"]
        self.classes: list[str] = list(meta["classes"])
        self.split_names: list[str] = list(meta["split_names"])
        self.image_stats: dict[str, Any] = meta["image_stats"]
        self._tables: dict[str, list[str]] = meta["tables"]
        self._count = len(arrays["name_off"]) - 1
        #: the class of each image's label (``-1``: none), as classification reads it
        self.class_codes: np.ndarray = arrays["label_codes"]
        #: how many boxes each image has (``0`` for classification)
        self.box_counts: np.ndarray = arrays["box_counts"]
        self.images: LazyImages[IndexedImage] = LazyImages(self._count, self.image)
        self.by_name = _Names(self)
        self._folded: np.ndarray | None = None
        self._lru: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._lru_lock = threading.Lock()

    @classmethod
    def empty(cls, task: str) -> DatasetIndex:
        """The index of a project that has imported nothing yet."""
        return cls.from_json(msgspec.json.encode({"task": task, "image_stats": image_stats([]), "images": []}))

    @classmethod
    def from_json(cls, data: bytes, name: str = "dataset.json") -> DatasetIndex:
        return cls.from_columns(read_columns(io.BytesIO(data), name))

    @classmethod
    def from_columns(cls, raw: RawColumns) -> DatasetIndex:
        """The index of freshly read columns: unservable images dropped, derived columns and orders computed."""
        file_images = len(raw.arrays["name_off"]) - 1
        return cls._derived(RawColumns(raw.header, _servable_only(raw.arrays), raw.tables), file_images)

    @classmethod
    def _derived(cls, raw: RawColumns, file_images: int) -> DatasetIndex:
        """The index of servable columns that already hold ``order_filename``: metadata and derived columns added."""
        arrays, tables, header = raw.arrays, raw.tables, raw.header
        count = len(arrays["name_off"]) - 1
        stored = header.image_stats
        stats = stored if stored.get("num_images") == count else _stats_of(arrays, tables["format"])
        meta = {"task": header.task, "source": header.source, "classes": list(header.classes),
                "split_names": list(header.split_names), "image_stats": stats, "tables": tables,
                "file_images": file_images}
        arrays.update(_class_columns(arrays, tables, meta["classes"]))
        arrays["split_codes"] = _split_codes(arrays, tables["split"], len(meta["split_names"]))
        arrays.update(_orders(arrays))
        return cls(arrays, meta)

    def __len__(self) -> int:
        return self._count

    # -- one image ---------------------------------------------------------------------
    def filename(self, position: int) -> str:
        start, end = self.arrays["name_off"][position : position + 2].tolist()
        return self.arrays["name_blob"][start:end].tobytes().decode("utf-8", "surrogatepass")

    def position(self, filename: str) -> int | None:
        """Where ``filename`` is, by binary search over the name order (UTF-8 byte order is code point order)."""
        order = self.arrays["order_filename"]
        low, high = 0, len(order)
        while low < high:
            middle = (low + high) // 2
            if self.filename(int(order[middle])) < filename:
                low = middle + 1
            else:
                high = middle
        if low < len(order) and self.filename(int(order[low])) == filename:
            return int(order[low])
        return None

    def image(self, position: int) -> IndexedImage:
        """Image ``position`` as the record a page or an info answer shows."""
        a, tables = self.arrays, self._tables
        start, end = a["path_off"][position : position + 2].tolist()
        split_len = int(a["split_len"][position])
        subset = int(a["subset"][position])
        return IndexedImage(
            filename=self.filename(position), width=int(a["width"][position]), height=int(a["height"][position]),
            size=int(a["size"][position]), format=tables["format"][int(a["format"][position])],
            sha256=a["sha"][position].tobytes().hex(),
            source_path=a["path_blob"][start:end].tobytes().decode("utf-8", "surrogatepass"),
            split=tuple(tables["split"][code] for code in a["split_mat"][position, :split_len].tolist()),
            annotations=self._annotations(position), source_subset=None if subset < 0 else tables["subset"][subset],
        )

    def list_items(self, positions: np.ndarray, boxes: bool = False) -> list[dict[str, Any]]:
        """The listed form of the images at ``positions`` (a page), gathered from the columns for the page at once.

        The same dicts as ``image(p)`` made into a list item (``service._list_item``),
        without building each image's annotations: only each one's first label's name is looked up.
        """
        a, tables = self.arrays, self._tables
        pos = np.asarray(positions, dtype=np.int64)
        texts = []
        for text in ("name", "path"):
            offsets, blob = a[f"{text}_off"], a[f"{text}_blob"]
            raw = blob.tobytes() if len(blob) < 4096 else None
            starts, ends = offsets[pos].tolist(), offsets[pos + 1].tolist()
            texts.append([(raw[s:e] if raw is not None else blob[s:e].tobytes()).decode("utf-8", "surrogatepass")
                          for s, e in zip(starts, ends, strict=True)])
        split_values = tables["split"]
        splits = [[split_values[code] for code in row[:length]]
                  for row, length in zip(a["split_mat"][pos].tolist(), a["split_len"][pos].tolist(), strict=True)]
        formats = [tables["format"][code] for code in a["format"][pos].tolist()]
        labels = self._first_label_names(pos)
        items = [
            {"filename": name, "class_name": label, "width": width, "height": height, "size": size, "format": fmt,
             "source_path": path, "split": split}
            for name, label, width, height, size, fmt, path, split in zip(
                texts[0], labels, a["width"][pos].tolist(), a["height"][pos].tolist(), a["size"][pos].tolist(), formats,
                texts[1], splits, strict=True)
        ]
        if boxes:
            for item, count in zip(items, a["box_counts"][pos].tolist(), strict=True):
                item["num_boxes"] = count
        return items

    def _first_label_names(self, pos: np.ndarray) -> list[str | None]:
        """The ``class_name`` of each image's first label annotation (``None``: no label, or a label without one)."""
        a, tables = self.arrays, self._tables
        found: list[str | None] = [None] * len(pos)
        if "label" not in tables["ann_type"] or not len(pos):
            return found
        starts = a["ann_off"][pos]
        counts = a["ann_off"][pos + 1] - starts
        total = int(counts.sum())
        if not total:
            return found
        owner = np.repeat(np.arange(len(pos)), counts)
        flat = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
        labelled = a["ann_type"][flat] == tables["ann_type"].index("label")
        owners, first = np.unique(owner[labelled], return_index=True)
        names = tables["ann_name"]
        for row, code in zip(owners.tolist(), a["ann_cname"][flat[labelled][first]].tolist(), strict=True):
            found[row] = None if code < 0 else names[code]
        return found

    def _annotations(self, position: int) -> tuple[IndexedAnnotation, ...]:
        a, tables = self.arrays, self._tables
        start, end = a["ann_off"][position : position + 2].tolist()
        found = []
        for k in range(start, end):
            class_id, name = int(a["ann_cid"][k]), int(a["ann_cname"][k])
            found.append(IndexedAnnotation(
                type=tables["ann_type"][int(a["ann_type"][k])], class_id=None if class_id == NO_CLASS_ID else class_id,
                class_name=None if name < 0 else tables["ann_name"][name],
                bbox=tuple(a["ann_bbox"][k].tolist()) if a["ann_hasbox"][k] else None,  # type: ignore[arg-type]
            ))
        return tuple(found)

    # -- the file it describes (streamed rewrites) ----------------------------------------
    def whole_file(self) -> bool:
        """Whether every image of ``dataset.json`` is indexed, position = place in the file (none was unservable)."""
        return self.meta.get("file_images") == self._count

    def file_stats(self) -> dict[str, Any]:
        """``image_stats`` of the images as the writer computes it (of every image: meaningful when ``whole_file``)."""
        return _stats_of(self.arrays, self._tables["format"])

    def split_lists(self) -> tuple[np.ndarray, list[str]]:
        """Every image's ``split`` list as stored: codes into the returned table (``-1`` past its end)."""
        return self.arrays["split_mat"], list(self._tables["split"])

    def with_split_lists(self, matrix: np.ndarray, table: list[str], split_names: list[str]) -> DatasetIndex:
        """This index with other split lists and names (after a streamed rewrite of only those)."""
        arrays = dict(self.arrays)
        arrays["split_mat"] = np.ascontiguousarray(matrix, dtype=np.int16)
        arrays["split_len"] = (matrix >= 0).sum(axis=1, dtype=np.int32)
        arrays["split_codes"] = _split_codes(arrays, table, len(split_names))
        meta = {**self.meta, "split_names": list(split_names), "tables": {**self._tables, "split": list(table)},
                "image_stats": self.file_stats()}
        return DatasetIndex(arrays, meta)

    def owners_of(self, hashes: list[str]) -> dict[str, str]:
        """The file name of the last image holding each SHA-256 hex digest of ``hashes`` that any image holds.

        The last, as a dict built over the images in file order keeps it (what an import reports a duplicate of).
        A 4 MiB bit table keyed by a mix of all 32 bytes of each digest picks the few candidate rows (hand-made
        hashes such as ``f"{i:064x}"`` vary in a few bytes only); only those rows are compared whole.
        """
        wanted = {bytes.fromhex(digest): digest for digest in hashes if SHA256.fullmatch(digest)}
        if not wanted or not self._count:
            return {}
        sha = self.arrays["sha"]
        keys = _digest_keys(np.ascontiguousarray(sha))
        table = np.zeros(_HASH_BITS + 1, dtype=bool)
        table[_digest_keys(np.frombuffer(b"".join(wanted), dtype=np.uint8).reshape(-1, 32))] = True
        found: dict[str, str] = {}
        candidates = np.flatnonzero(table[keys] & self.arrays["sha_ok"])
        for position, row in zip(candidates.tolist(), sha[candidates], strict=True):
            digest = wanted.get(row.tobytes())
            if digest is not None:
                found[digest] = self.filename(position)  # later images overwrite: the last one wins
        return found

    def casefolded_names(self) -> set[bytes]:
        """Every file name casefolded, as UTF-8: what a new name must not equal, ignoring case (``naming.unique_name``).

        ASCII names are folded as bytes in one pass and cut apart by one ``split`` (names never hold a newline);
        only names with other characters go through ``str.casefold``.
        """
        if not self._count:
            return set()
        blob, offsets = self.arrays["name_blob"], self.arrays["name_off"]
        names = np.insert(_ascii_lowered(blob), offsets[1:-1], ord("\n")).tobytes().split(b"\n")
        wide = np.unique(np.searchsorted(offsets, np.flatnonzero(blob >= 0x80), side="right") - 1)
        for position in wide.tolist():
            names[position] = self.filename(position).casefold().encode("utf-8", "surrogatepass")
        return set(names)

    def class_ids_agree(self, classes: list[str]) -> bool:
        """Whether every label and box naming a class of ``classes`` has that class's position as its ``class_id``.

        Then ``document.relabel`` to ``classes`` changes no image (a streamed import may append).
        """
        types = self._tables["ann_type"]
        kinds = [types.index(kind) for kind in ("label", "bbox") if kind in types]
        position = {name: i for i, name in enumerate(classes)}
        wanted = np.array([position.get(name, -1) for name in self._tables["ann_name"]] + [-1], dtype=np.int64)
        expected = wanted[self.arrays["ann_cname"]]
        named = np.isin(self.arrays["ann_type"], kinds) & (expected >= 0)
        return bool((self.arrays["ann_cid"][named] == expected[named]).all())

    def appended(self, images: bytes, header: Mapping[str, Any]) -> DatasetIndex:
        """This index with the images of the JSON array ``images`` after its own, under ``header`` (a streamed import).

        Equal, column by column, to the index of the file that append wrote, without reading that file: the new
        images' columns are read alone and joined to these (their string tables re-coded into these tables), and
        the derived columns computed as ``from_columns`` does. The name order is merged rather than sorted again.
        ``header``: the file's new ``task``, ``source``, ``classes``, ``split_names`` and ``image_stats``.
        Needs ``whole_file`` (else the file holds images this index lacks).
        """
        if not self.whole_file():
            raise ValueError("only the index of every image of the file can be appended to")
        head = {key: header[key] for key in ("task", "source", "classes", "split_names", "image_stats")}
        new = read_columns(io.BytesIO(msgspec.json.encode(head)[:-1] + b',"images":' + images + b"}"), "the new images")
        arrays, tables = _joined(self.arrays, self._tables, new.arrays, new.tables)
        raw = RawColumns(new.header, arrays, tables)
        order = self._merged_name_order(new.arrays)
        if order is None:  # an unservable or repeated name: the index drops images, as a fresh build would
            return DatasetIndex.from_columns(raw)
        arrays["order_filename"] = order
        return DatasetIndex._derived(raw, len(arrays["name_off"]) - 1)

    def _merged_name_order(self, new: dict[str, np.ndarray]) -> np.ndarray | None:
        """``order_filename`` of the joined index, each new name inserted where a binary search puts it.

        ``None`` when a fresh build would drop a new image (an unsafe name or hash, a name already there).
        """
        names = strings(new["name_blob"], new["name_off"])
        if not (bool(new["sha_ok"].all()) and all_safe_names(names) and len(set(names)) == len(names)):
            return None
        wanted = [name.encode("utf-8", "surrogatepass") for name in names]
        ranked = sorted(range(len(wanted)), key=wanted.__getitem__)
        order = self.arrays["order_filename"]
        blob, offsets = self.arrays["name_blob"], self.arrays["name_off"]

        def name_at(rank: int) -> bytes:
            position = int(order[rank])
            return blob[offsets[position] : offsets[position + 1]].tobytes()

        places = [bisect.bisect_left(range(len(order)), wanted[k], key=name_at) for k in ranked]
        if any(place < len(order) and name_at(place) == wanted[k] for place, k in zip(places, ranked, strict=True)):
            return None
        return np.insert(order, places, np.array(ranked, dtype=np.int64) + self._count).astype(np.int32, copy=False)

    def names_are_classes(self) -> bool:
        """Whether every named label or box names a class of ``classes`` (``class_sets`` then equals the document's)."""
        types, tables = self._tables["ann_type"], self._tables
        kinds = [types.index(kind) for kind in ("label", "bbox") if kind in types]
        named = np.isin(self.arrays["ann_type"], kinds) & (self.arrays["ann_cname"] >= 0)
        known = set(self.classes)
        in_classes = np.array([name in known for name in tables["ann_name"]] + [False], dtype=bool)
        return bool(in_classes[self.arrays["ann_cname"][named]].all())

    # -- whole-dataset facts ------------------------------------------------------------
    def split_codes(self, split_index: int) -> np.ndarray:
        """``SPLIT_VALUES`` codes of every image in split ``split_index`` (missing or odd values count as none)."""
        return self.arrays["split_codes"][:, split_index]

    def filename_rank(self) -> np.ndarray:
        """Each image's position in filename order (what split assignment sorts by)."""
        rank = np.empty(self._count, dtype=np.int64)
        rank[self.arrays["order_filename"]] = np.arange(self._count)
        return rank

    def labels_are_classes(self) -> bool:
        """Whether every image's label names a class of ``classes`` (a hand-edited file may name another)."""
        return int(self.arrays["has_label"].sum()) == int((self.class_codes >= 0).sum())

    def _members(self, code: int) -> np.ndarray:
        offsets = self.arrays["member_off"]
        return self.arrays["member_img"][offsets[code] : offsets[code + 1]]

    def class_counts(self) -> dict[str, int]:
        """Annotations per class: images for classification (one label each), boxes for detection."""
        return {name: int(self.arrays["per_class"][i]) for i, name in enumerate(self.classes)}

    def class_image_counts(self) -> dict[str, int]:
        """Images per class (an image with three boxes of one class counts once)."""
        counts = np.diff(self.arrays["member_off"])
        return {name: int(counts[i]) for i, name in enumerate(self.classes)}

    def class_sets(self) -> list[frozenset[str]]:
        """The classes of each image (its label, or the classes of its boxes), in image order."""
        sets: list[set[str]] = [set() for _ in range(self._count)]
        for code, name in enumerate(self.classes):
            for position in self._members(code).tolist():
                sets[position].add(name)
        return [frozenset(found) for found in sets]

    def split_distribution(self, split_index: int) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """Images per subset, and per class per subset (an image counts once for each class it has), of split ``split_index``."""
        codes = self.split_codes(split_index).astype(np.int64)
        totals = np.bincount(codes, minlength=len(SPLIT_VALUES))
        offsets = self.arrays["member_off"]
        pair_class = np.repeat(np.arange(len(self.classes), dtype=np.int64), np.diff(offsets))
        joint = np.bincount(
            pair_class * len(SPLIT_VALUES) + codes[self.arrays["member_img"]],
            minlength=len(self.classes) * len(SPLIT_VALUES),
        ).reshape(len(self.classes), len(SPLIT_VALUES))
        stats = {value: int(totals[code]) for code, value in enumerate(SPLIT_VALUES)}
        per_class = {
            name: {value: int(joint[i, code]) for code, value in enumerate(SPLIT_VALUES)} for i, name in enumerate(self.classes)
        }
        return stats, per_class

    # -- pages ------------------------------------------------------------------------------
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
        order = self.arrays[_ORDER_KEYS[sort_by]]
        mask: np.ndarray | None = None
        if filter_class is not None:
            mask = np.zeros(self._count, dtype=bool)
            if filter_class in self.classes:
                mask[self._members(self.classes.index(filter_class))] = True
        if filter_split is not None:
            split_index, subset = filter_split
            matches = self.split_codes(split_index) == _SPLIT_CODE[subset]
            mask = matches if mask is None else mask & matches
        if search:
            if "\x00" in search:  # numpy strings drop NULs; no file name has one
                found = np.zeros(self._count, dtype=bool)
            else:
                found = np.strings.find(self._folded_names(), search.casefold().encode("utf-8", "surrogatepass")) >= 0
            mask = found if mask is None else mask & found
        selected = order if mask is None else order[mask[order]]
        return selected[::-1] if descending else selected

    def _folded_names(self) -> np.ndarray:
        """Case-folded names as fixed-width UTF-8 (a substring of UTF-8 is a substring of the text), made on first search."""
        if self._folded is None:
            blob, offsets = self.arrays["name_blob"], self.arrays["name_off"]
            if blob.size and int(blob.max()) >= 0x80:
                folded = [name.casefold().encode("utf-8", "surrogatepass") for name in strings(blob, offsets)]
                lengths = np.array([len(f) for f in folded], dtype=np.int64)
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                blob = np.frombuffer(b"".join(folded), dtype=np.uint8)
            else:
                blob = _ascii_lowered(blob)
            self._folded = fixed_width(blob, offsets)
        return self._folded


_ORDER_KEYS = {"filename": "order_filename", "class": "order_class", "size": "order_size", "num_boxes": "order_boxes"}


class LazyImages(Sequence[_Image]):
    """A dataset's images, each made by ``make(position)`` when read, never all at once (``index.images``, a view's)."""

    def __init__(self, count: int, make: Callable[[int], _Image]) -> None:
        self._count = count
        self._make = make

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            return [self._make(i) for i in range(self._count)[position]]
        position = operator.index(position)
        if position < 0:
            position += self._count
        if not 0 <= position < self._count:
            raise IndexError(position)
        return self._make(position)

    def __iter__(self) -> Iterator[_Image]:
        return map(self._make, range(self._count))


class _Names(Mapping[str, int]):
    """``index.by_name``: file name to position, found by binary search (no dict of a million names)."""

    def __init__(self, index: DatasetIndex) -> None:
        self._index = index

    def __getitem__(self, name: str) -> int:
        found = self._index.position(name) if isinstance(name, str) else None
        if found is None:
            raise KeyError(name)
        return found

    def __iter__(self) -> Iterator[str]:
        index = self._index
        return iter(strings(index.arrays["name_blob"], index.arrays["name_off"]))

    def __len__(self) -> int:
        return len(self._index)


def _ascii_lowered(blob: np.ndarray) -> np.ndarray:
    """UTF-8 bytes with A-Z made a-z (``str.casefold`` of ASCII text; other bytes unchanged)."""
    return blob + ((blob >= ord("A")) & (blob <= ord("Z"))) * np.uint8(32)


def _digest_keys(sha: np.ndarray) -> np.ndarray:
    """A 22-bit key per 32-byte digest (rows of ``sha``): its four 64-bit words XORed, mixed (Fibonacci hashing)."""
    words = sha.view(np.uint64)
    mixed = (words[:, 0] ^ words[:, 1] ^ words[:, 2] ^ words[:, 3]) * np.uint64(0x9E3779B97F4A7C15)
    return mixed >> np.uint64(64 - _HASH_BITS.bit_length())


def fixed_width(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Blob strings as a fixed-width bytes array (``S<longest>``), for numpy sorting and substring search."""
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max(initial=0)))
    matrix = np.zeros((len(lengths), width), dtype=np.uint8)
    matrix[np.arange(width) < lengths[:, None]] = blob[: int(offsets[-1])] if len(offsets) else blob
    return matrix.view(f"S{width}").ravel()


def _servable_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` without the images that must not be served (unsafe name or hash, repeated name), with ``order_filename``.

    A hand-edited ``dataset.json`` could name ``../../x``; such entries are never indexed, so never served.
    """
    names = fixed_width(arrays["name_blob"], arrays["name_off"])
    order = np.argsort(names, kind="stable").astype(np.int32)
    keep = servable(arrays, names, order)
    if keep.all():
        return {**arrays, "order_filename": order}
    kept = {name: arrays[name][keep] for name in _PER_IMAGE}
    for text in ("name", "path"):
        kept[f"{text}_blob"], kept[f"{text}_off"] = _ragged_keep(arrays[f"{text}_blob"], arrays[f"{text}_off"], keep)
    annotation_keep = np.repeat(keep, np.diff(arrays["ann_off"]))
    kept.update({name: arrays[name][annotation_keep] if len(arrays[name]) else arrays[name] for name in _PER_ANNOTATION})
    counts = np.diff(arrays["ann_off"])[keep]
    kept["ann_off"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    kept["order_filename"] = np.argsort(fixed_width(kept["name_blob"], kept["name_off"]), kind="stable").astype(np.int32)
    return kept


#: the columns a file's images are read into (``index_build``); every other column is derived from them
_RAW_COLUMNS = ("name_blob", "name_off", "path_blob", "path_off", "width", "height", "size", "sha", "sha_ok", "format",
                "subset", "split_len", "split_mat", "ann_off", "ann_type", "ann_cid", "ann_cname", "ann_bbox", "ann_hasbox")
#: table -> the column of codes into it (``-1``: no value)
_CODED = {"format": "format", "subset": "subset", "split": "split_mat", "ann_type": "ann_type", "ann_name": "ann_cname"}


def _joined(old: dict[str, np.ndarray], old_tables: dict[str, list[str]], new: dict[str, np.ndarray],
            new_tables: dict[str, list[str]]) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
    """The raw columns of ``old``'s images then ``new``'s, as one read of both would make them.

    A table's values keep their first-seen order (the old ones, then the new ones not among them), so the
    codes are those of a fresh read of the joined file.
    """
    tables, recoded = {}, dict(new)
    for table, column in _CODED.items():
        codes = {value: code for code, value in enumerate(old_tables[table])}
        lookup = np.array([*(codes.setdefault(value, len(codes)) for value in new_tables[table]), -1], dtype=np.int64)
        tables[table] = list(codes)  # dicts keep insertion order: the old values, then the new ones
        recoded[column] = lookup[new[column]].astype(new[column].dtype)  # -1 (no value) reads the trailing -1
    width = max(old["split_mat"].shape[1], new["split_mat"].shape[1])
    annotations = (len(old["ann_type"]), len(new["ann_type"]))
    boxed = bool(old["ann_hasbox"].any() or new["ann_hasbox"].any())
    arrays: dict[str, np.ndarray] = {}
    for name in _RAW_COLUMNS:
        first, second = old[name], recoded[name]
        if name.endswith("_off"):
            second = second[1:] + first[-1]
        elif name == "split_mat":
            first, second = _widened(first, width), _widened(second, width)
        elif name == "ann_bbox":
            if not boxed:
                arrays[name] = np.zeros((0, 4), dtype=np.float64)  # no box anywhere: no column of NaNs
                continue
            first, second = (_boxes(box, count) for box, count in zip((first, second), annotations, strict=True))
        arrays[name] = np.concatenate([first, second]).astype(old[name].dtype, copy=False)
    return arrays, tables


def _widened(matrix: np.ndarray, width: int) -> np.ndarray:
    """Split lists padded with ``-1`` to ``width`` columns."""
    grown = np.full((matrix.shape[0], width), -1, dtype=np.int16)
    grown[:, : matrix.shape[1]] = matrix
    return grown


def _boxes(boxes: np.ndarray, count: int) -> np.ndarray:
    """A box column of ``count`` annotations (NaN rows where a file without boxes stored none)."""
    return boxes if len(boxes) == count else np.full((count, 4), np.nan, dtype=np.float64)


def _ragged_keep(blob: np.ndarray, offsets: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.diff(offsets)
    kept = blob[np.repeat(keep, lengths)]
    return kept, np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)


def _stats_of(arrays: dict[str, np.ndarray], formats: list[str]) -> dict[str, Any]:
    """``image_stats`` recomputed, for a file whose stored statistics are missing or stale (hand-edited)."""
    if not len(arrays["width"]):
        return image_stats([])
    return {
        "num_images": len(arrays["width"]),
        "min_width": int(arrays["width"].min()), "max_width": int(arrays["width"].max()),
        "min_height": int(arrays["height"].min()), "max_height": int(arrays["height"].max()),
        "formats": sorted({formats[code] for code in np.unique(arrays["format"]).tolist()}),
    }


def _class_columns(arrays: dict[str, np.ndarray], tables: dict[str, list[str]], classes: list[str]) -> dict[str, np.ndarray]:
    """Label codes, box counts, the class a ``class`` sort uses, annotations per class, and class memberships.

    An image's class is its first label's; it sorts by that class, else by the
    first (lowest id) class of its boxes, else after every class. Annotations
    naming a class that is not in ``classes`` (a hand-edited file) are ignored.
    """
    count, no_class = len(arrays["ann_off"]) - 1, len(classes)
    position = {name: i for i, name in enumerate(classes)}
    name_class = np.array([position.get(name, -1) for name in tables["ann_name"]] + [-1], dtype=np.int64)
    ann_class = name_class[arrays["ann_cname"]]  # a missing name (-1) reads the trailing -1
    types = tables["ann_type"]
    is_label = arrays["ann_type"] == (types.index("label") if "label" in types else -1)
    is_box = arrays["ann_type"] == (types.index("bbox") if "bbox" in types else -1)
    image_of = np.repeat(np.arange(count, dtype=np.int64), np.diff(arrays["ann_off"]))
    labels = np.flatnonzero(is_label)
    first = labels[np.diff(image_of[labels], prepend=-1) != 0]  # annotations are in image order
    label_codes = np.full(count, -1, dtype=np.int64)
    label_codes[image_of[first]] = ann_class[first]
    has_label = np.zeros(count, dtype=bool)
    has_label[image_of[first]] = True
    box_counts = np.bincount(image_of[is_box], minlength=count).astype(np.int32)
    good_box = is_box & (ann_class >= 0)
    labelled = np.flatnonzero(label_codes >= 0)
    pair_image = np.concatenate([image_of[good_box], labelled])
    pair_class = np.concatenate([ann_class[good_box], label_codes[labelled]])
    per_class = np.bincount(pair_class, minlength=no_class).astype(np.int64)
    lowest_box = np.full(count, no_class, dtype=np.int64)
    np.minimum.at(lowest_box, image_of[good_box], ann_class[good_box])
    sort_class = np.where(label_codes >= 0, label_codes, lowest_box)
    pairs = np.sort(pair_class * max(count, 1) + pair_image)
    pairs = pairs[np.diff(pairs, prepend=-1) != 0]
    member_off = np.zeros(no_class + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs // max(count, 1), minlength=no_class), out=member_off[1:])
    return {"label_codes": label_codes.astype(np.int32), "has_label": has_label, "box_counts": box_counts, "sort_class": sort_class,
            "per_class": per_class, "member_off": member_off, "member_img": pairs % max(count, 1)}


def _split_codes(arrays: dict[str, np.ndarray], values: list[str], splits: int) -> np.ndarray:
    """``SPLIT_VALUES`` codes per image and split (``[image, split]``): missing or odd values are none."""
    mapped = np.array([_SPLIT_CODE.get(value, _NONE_CODE) for value in values] + [_NONE_CODE], dtype=np.int8)
    matrix = arrays["split_mat"]
    codes = np.full((len(arrays["split_len"]), splits), _NONE_CODE, dtype=np.int8)
    width = min(splits, matrix.shape[1])
    codes[:, :width] = mapped[matrix[:, :width]]  # -1 (past a short list) reads the trailing none
    return codes


def _orders(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    by_name = arrays["order_filename"]
    rank = np.empty(len(by_name), dtype=np.int64)
    rank[by_name] = np.arange(len(by_name))
    return {"order_class": _by_then_name(arrays["sort_class"], rank), "order_size": _by_then_name(arrays["size"], rank),
            "order_boxes": _by_then_name(arrays["box_counts"], rank)}  # int32 positions: half the memory of int64


def _by_then_name(key: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Positions ordered by ``key``, then by name (``rank``): ``lexsort``'s order, by one int64 sort when it fits."""
    count = len(rank)
    if not count:
        return np.zeros(0, dtype=np.int64)
    low, high = int(key.min()), int(key.max())
    if low >= 0 and high < (2**62) // count:
        return np.argsort(key.astype(np.int64) * count + rank).astype(np.int32)
    return np.lexsort((rank, key)).astype(np.int32)


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing).

    Building an index frees hundreds of MB of short-lived objects in pieces the
    allocator would otherwise keep for the process: its resident size stays
    that of the index, not of the build.
    """
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None)
except (OSError, TypeError):  # pragma: no cover - a platform without a C library handle (Windows: TypeError)
    _LIBC = None

class IndexCache:
    """One ``DatasetIndex`` per ``dataset.json`` path, rebuilt when the file changes, and kept on disk beside it."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple[int, int, int], DatasetIndex]] = {}
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, path: Path) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(path, threading.Lock())

    def get(self, path: Path) -> DatasetIndex | None:
        """The index of ``path`` as it is now, or ``None`` when the file does not exist."""
        with self._lock(path):
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
                key = index_cache.file_key(handle, info)
                loaded = index_cache.load(index_cache.cache_path(path), key)
                if loaded is not None:
                    index = DatasetIndex(*loaded)
                else:
                    handle.seek(0)
                    index = DatasetIndex.from_columns(read_columns(handle, path.name))
                    release_free_memory()  # the build's batches are gone: hand their pages back
                    index_cache.save_later(index_cache.cache_path(path), key, index.arrays, index.meta)
            self._entries[path] = (version, index)
            return index

    def current(self, path: Path) -> DatasetIndex | None:
        """The index already in memory for ``path`` as it is now, never building one (``None`` otherwise)."""
        with self._lock(path):
            cached = self._entries.get(path)
            try:
                info = os.stat(path)
            except FileNotFoundError:
                return None
            if cached is not None and cached[0] == (info.st_ino, info.st_mtime_ns, info.st_size):
                return cached[1]
            return None

    def put(self, path: Path, index: DatasetIndex) -> None:
        """Adopt ``index`` as that of ``path`` just written (by its writer, under the project lock), on disk too."""
        with self._lock(path), open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            index_cache.save_later(index_cache.cache_path(path), index_cache.file_key(handle, info), index.arrays, index.meta)
            self._entries[path] = ((info.st_ino, info.st_mtime_ns, info.st_size), index)

    def forget(self, path: Path) -> None:
        self._entries.pop(path, None)
