"""``dataset.json`` bytes to numpy columns, read in batches so a million images never exist as Python objects at once.

A file as our writer lays it out (``msgspec`` indent 2, ``images`` the last
key) is cut into batches of whole images at ``\\n    },\\n    {`` (a newline
never occurs inside a JSON string, so that text is structure: a closing and
an opening brace at the images' depth, or a decode error if a hand-edited file
nests something there); each batch is decoded alone and turned into columns.
Any other layout is decoded whole (slower, same columns).

Per image the decoder keeps ``split`` and ``annotations`` as raw bytes and
decodes each *distinct* value once: a classification dataset has a few dozen
distinct split lists and one label annotation per class.
"""

from __future__ import annotations

import contextlib
import re
from operator import attrgetter
from dataclasses import dataclass, field
from typing import IO, Any

import msgspec
import numpy as np

from ..errors import CorruptDataError
from .layout import NotStreamable, image_pieces, read_head
from .naming import MAX_NAME_CHARS, is_safe_name

#: ``ann_class_id`` of an annotation without a ``class_id``.
NO_CLASS_ID = np.iinfo(np.int64).min
_CHUNK = 8 * 1024 * 1024
#: a SHA-256 as the index keeps it: 64 lower-case hex digits
SHA256 = re.compile(r"[0-9a-f]{64}")


class _Header(msgspec.Struct):
    version: int = 1
    task: str = "classification"
    source: dict[str, Any] | None = None
    classes: list[str] = msgspec.field(default_factory=list)
    split_names: list[str] = msgspec.field(default_factory=list)
    image_stats: dict[str, Any] = msgspec.field(default_factory=dict)


class _Row(msgspec.Struct, gc=False):
    filename: str
    width: int
    height: int
    size: int
    format: str
    sha256: str
    source_path: str
    split: msgspec.Raw = msgspec.Raw(b"[]")
    annotations: msgspec.Raw = msgspec.Raw(b"[]")
    source_subset: str | None = None


class _Whole(_Header):
    images: list[_Row] = msgspec.field(default_factory=list)


class _Annotation(msgspec.Struct, gc=False):
    type: str
    class_id: int | None = None
    class_name: str | None = None
    bbox: tuple[float, float, float, float] | None = None


_SPLITS = msgspec.json.Decoder(list[tuple[str, ...]])
_ANNOTATIONS = msgspec.json.Decoder(list[tuple[_Annotation, ...]])
_ROWS = msgspec.json.Decoder(list[_Row])


@dataclass
class Table:
    """Distinct strings of a column and their codes (``code(value)`` adds a new one)."""

    values: list[str] = field(default_factory=list)
    _codes: dict[str, int] = field(default_factory=dict)

    def code(self, value: str) -> int:
        found = self._codes.get(value)
        if found is None:
            found = self._codes[value] = len(self.values)
            self.values.append(value)
        return found


@dataclass
class RawColumns:
    """Every stored field of every image, in file order (nothing filtered yet)."""

    header: _Header
    arrays: dict[str, np.ndarray]
    tables: dict[str, list[str]]


class _Builder:
    """Accumulates the columns of the batches of one file."""

    def __init__(self) -> None:
        self.names: list[bytes] = []
        self.name_lengths: list[np.ndarray] = []
        self.paths: list[bytes] = []
        self.path_lengths: list[np.ndarray] = []
        self.sha: list[np.ndarray] = []
        self.sha_ok: list[np.ndarray] = []
        self.numbers: tuple[list[np.ndarray], ...] = ([], [], [])
        self.formats, self.subsets = Table(), Table()
        self.format_codes: list[np.ndarray] = []
        self.subset_codes: list[np.ndarray] = []
        self.split_keys: dict[bytes, int] = {}
        self.split_codes: list[np.ndarray] = []
        self.ann_keys: dict[bytes, int] = {}
        self.ann_codes: list[np.ndarray] = []

    def add(self, rows: list[_Row]) -> None:
        """The columns of one batch; every per-row step is a C-level ``map`` (no Python code runs per image)."""
        count = len(rows)
        for strings, lengths, getter in ((self.names, self.name_lengths, _FILENAME), (self.paths, self.path_lengths, _PATH)):
            values = list(map(getter, rows))
            blob = "".join(values).encode("utf-8", "surrogatepass")
            lengths.append(np.fromiter(map(len, values), dtype=np.int64, count=count) if len(blob) == sum(map(len, values))
                           else np.array([len(v.encode("utf-8", "surrogatepass")) for v in values], dtype=np.int64))
            strings.append(blob)
        sha, sha_ok = _hashes(list(map(_SHA256_FIELD, rows)))
        self.sha.append(sha)
        self.sha_ok.append(sha_ok)
        for column, getter in zip(self.numbers, (_WIDTH, _HEIGHT, _SIZE), strict=True):
            column.append(np.fromiter(map(getter, rows), dtype=np.int64, count=count))
        self.format_codes.append(_coded(self.formats._codes, list(map(_FORMAT, rows)), np.int32, self.formats))
        self.subset_codes.append(_coded({None: -1, **self.subsets._codes}, list(map(_SUBSET, rows)), np.int32, self.subsets))
        self.split_codes.append(_coded(self.split_keys, list(map(bytes, map(_SPLIT_FIELD, rows))), np.int64))
        self.ann_codes.append(_coded(self.ann_keys, list(map(bytes, map(_ANNOTATIONS_FIELD, rows))), np.int64))

    def finish(self, header: _Header, name: str) -> RawColumns:
        try:
            split_lists = _SPLITS.decode(b"[" + b",".join(self.split_keys) + b"]")
            annotation_lists = _ANNOTATIONS.decode(b"[" + b",".join(self.ann_keys) + b"]")
        except msgspec.DecodeError as exc:
            raise CorruptDataError(f"{name} is corrupt and cannot be read ({exc})", {"file": name}) from exc
        # each accumulated list is emptied once concatenated, so the build never holds a column twice over
        arrays: dict[str, np.ndarray] = {}
        arrays["name_blob"], arrays["name_off"] = _blob(_drain(self.names), _drain(self.name_lengths))
        arrays["path_blob"], arrays["path_off"] = _blob(_drain(self.paths), _drain(self.path_lengths))
        for key, column in zip(("width", "height", "size"), self.numbers, strict=True):
            arrays[key] = _cat(_drain(column), np.int64)
        arrays["sha"] = _cat(_drain(self.sha), np.uint8, (0, 32))
        arrays["sha_ok"] = _cat(_drain(self.sha_ok), np.bool_)
        arrays["format"] = _cat(_drain(self.format_codes), np.int32)
        arrays["subset"] = _cat(_drain(self.subset_codes), np.int32)
        split_table = Table()
        arrays["split_len"], arrays["split_mat"] = _split_matrix(_cat(_drain(self.split_codes), np.int64), split_lists,
                                                                 split_table)
        ann_table, names_table = Table(), Table()
        arrays.update(_annotation_columns(_cat(_drain(self.ann_codes), np.int64), annotation_lists, ann_table, names_table))
        tables = {"format": self.formats.values, "subset": self.subsets.values, "split": split_table.values,
                  "ann_type": ann_table.values, "ann_name": names_table.values}
        return RawColumns(header, arrays, tables)


_FILENAME, _PATH, _SHA256_FIELD, _FORMAT, _SUBSET, _SPLIT_FIELD, _ANNOTATIONS_FIELD = map(
    attrgetter, ("filename", "source_path", "sha256", "format", "source_subset", "split", "annotations"))
_WIDTH, _HEIGHT, _SIZE = map(attrgetter, ("width", "height", "size"))


def _coded(codes: dict[Any, int], column: list[Any], dtype: Any, table: Table | None = None) -> np.ndarray:
    """``column`` as codes; ``codes`` (through ``table`` when given) gains its new values, in first-seen order."""
    for value in dict.fromkeys(column):
        if value not in codes:
            codes[value] = table.code(value) if table is not None else len(codes)
    return np.fromiter(map(codes.__getitem__, column), dtype=dtype, count=len(column))


def read_columns(handle: IO[bytes], name: str = "dataset.json") -> RawColumns:
    """The columns of the ``dataset.json`` open in ``handle`` (read from its current position to the end)."""
    try:
        streamed = _streamed(handle, name)
        if streamed is not None:
            return streamed
        handle.seek(0)
        whole = msgspec.json.decode(handle.read(), type=_Whole)
    except msgspec.DecodeError as exc:
        raise CorruptDataError(f"{name} is corrupt and cannot be read ({exc})", {"file": name}) from exc
    builder = _Builder()
    builder.add(whole.images)
    header = _Header(whole.version, whole.task, whole.source, whole.classes, whole.split_names, whole.image_stats)
    return builder.finish(header, name)


def _streamed(handle: IO[bytes], name: str) -> RawColumns | None:
    """Batch by batch, or ``None`` when the file is not laid out as our writer lays it out (then it is read whole)."""
    try:
        text, rest = read_head(handle, _CHUNK)
        header = msgspec.json.decode(text, type=_Header)
        builder = _Builder()
        if rest is not None:
            # each batch is decoded from the one copy ``image_pieces`` makes: ``[``, whole images, ``]``
            for batch in image_pieces(rest, handle, _CHUNK, before=b"[", after=b"]"):
                rows = _ROWS.decode(batch)
                del batch
                builder.add(rows)
                del rows
        return builder.finish(header, name)
    except (NotStreamable, msgspec.DecodeError):  # another layout, a hand-edited file cut in the wrong place, a broken one
        return None


def _hashes(hashes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The 32 bytes of each lower-case hex SHA-256 (zeros where it is not one) and which ones were valid."""
    joined = "".join(hashes)
    if len(joined) == 64 * len(hashes) and joined == joined.lower():
        with contextlib.suppress(ValueError):
            raw = bytes.fromhex(joined)  # skips whitespace: then it is short, and checked hash by hash below
            if len(raw) == 32 * len(hashes):
                return np.frombuffer(raw, dtype=np.uint8).reshape(len(hashes), 32), np.ones(len(hashes), bool)
    ok = np.array([SHA256.fullmatch(h) is not None for h in hashes], dtype=bool)
    fixed = "".join(h if good else "0" * 64 for h, good in zip(hashes, ok.tolist(), strict=True))
    return np.frombuffer(bytes.fromhex(fixed), dtype=np.uint8).reshape(len(hashes), 32), ok


def _blob(parts: list[bytes], lengths: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    blob = np.frombuffer(b"".join(parts), dtype=np.uint8)
    offsets = np.zeros(sum(len(x) for x in lengths) + 1, dtype=np.int64)
    np.cumsum(_cat(lengths, np.int64), out=offsets[1:])
    return blob, offsets


def _drain(parts: list[Any]) -> list[Any]:
    """The items of ``parts``, which is left empty (its owner no longer holds them)."""
    taken = parts[:]
    parts.clear()
    return taken


def _cat(parts: list[np.ndarray], dtype: Any, empty_shape: tuple[int, ...] = (0,)) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty_shape, dtype=dtype)


def _split_matrix(codes: np.ndarray, lists: list[tuple[str, ...]], table: Table) -> tuple[np.ndarray, np.ndarray]:
    """Each image's split list as codes into ``table`` (``-1`` past its length), and its length."""
    width = max((len(values) for values in lists), default=0)
    distinct = np.full((len(lists), width), -1, dtype=np.int16)
    for row, values in enumerate(lists):
        distinct[row, : len(values)] = [table.code(value) for value in values]
    lengths = np.array([len(values) for values in lists], dtype=np.int32)
    return lengths[codes] if len(lists) else np.zeros(0, np.int32), distinct[codes] if len(lists) else np.zeros((0, 0), np.int16)


def _annotation_columns(codes: np.ndarray, lists: list[tuple[_Annotation, ...]], types: Table,
                        names: Table) -> dict[str, np.ndarray]:
    """The annotations of every image, flat (``ann_off`` says where each image's start), from the distinct lists."""
    flat = [annotation for values in lists for annotation in values]
    counts = np.array([len(values) for values in lists], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(lists) else np.zeros(0, np.int64)
    per_image = counts[codes] if len(lists) else np.zeros(0, np.int64)
    offsets = np.zeros(len(codes) + 1, dtype=np.int64)
    np.cumsum(per_image, out=offsets[1:])
    take = np.repeat(starts[codes] - offsets[:-1], per_image) + np.arange(offsets[-1]) if len(lists) else np.zeros(0, np.int64)
    kind = np.array([types.code(a.type) for a in flat], dtype=np.int16)
    class_id = np.array([NO_CLASS_ID if a.class_id is None else a.class_id for a in flat], dtype=np.int64)
    class_name = np.array([-1 if a.class_name is None else names.code(a.class_name) for a in flat], dtype=np.int32)
    bbox = np.array([a.bbox if a.bbox is not None else (np.nan,) * 4 for a in flat], dtype=np.float64).reshape(len(flat), 4)
    has_box = np.array([a.bbox is not None for a in flat], dtype=bool)
    boxes = bbox[take] if has_box.any() else np.zeros((0, 4), dtype=np.float64)  # none: no column of NaNs
    return {"ann_off": offsets, "ann_type": kind[take], "ann_cid": class_id[take], "ann_cname": class_name[take],
            "ann_bbox": boxes, "ann_hasbox": has_box[take]}


def servable(arrays: dict[str, np.ndarray], sorted_names: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Which images may be served: a safe file name, a valid hash, the first of each name (both become paths).

    ``sorted_names``/``order``: the names as fixed-width bytes and their sort order (repeats sit side by side).
    """
    blob, offsets = arrays["name_blob"], arrays["name_off"]
    keep = arrays["sha_ok"].copy()
    if blob.size and int(blob.max()) >= 0x80:
        keep &= np.array([is_safe_name(n) for n in strings(blob, offsets)], dtype=bool)
    else:
        keep &= _safe_ascii(blob, offsets)
    ordered = sorted_names[order]
    if len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any()):
        seen: set[str] = set()
        for position, name in enumerate(strings(blob, offsets)):
            if name in seen:
                keep[position] = False
            elif keep[position]:
                seen.add(name)
    return keep


_NAME_BYTES = np.zeros(256, dtype=bool)
for _byte in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-":
    _NAME_BYTES[_byte] = True


def _safe_ascii(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``is_safe_name`` of every ASCII name at once: 1 to ``MAX_NAME_CHARS`` of ``[A-Za-z0-9_.-]``, no leading dot."""
    lengths = np.diff(offsets)
    ok = (lengths >= 1) & (lengths <= MAX_NAME_CHARS)
    bad = np.flatnonzero(~_NAME_BYTES[blob])
    ok[np.searchsorted(offsets, bad, side="right") - 1] = False
    starts = offsets[:-1][lengths > 0]
    ok[np.flatnonzero(lengths > 0)[blob[starts] == ord(".")]] = False
    return ok


def strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Every string of a blob column."""
    text = blob.tobytes()
    bounds = offsets.tolist()
    return [text[a:b].decode("utf-8", "surrogatepass") for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
