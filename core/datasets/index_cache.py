"""The index's columns on disk beside ``dataset.json`` (``.dataset.index``), mapped back in a fraction of a second.

One file: a magic line, a JSON header (the dataset version it was built
from, the index's small metadata, each column's dtype, shape and offset, a
CRC-32 of the columns) and the raw columns, 64-byte aligned, read back with
``mmap`` as read-only numpy views.

It is a cache, never the truth. It is used only when its key equals that of
``dataset.json`` now: size, modification time (ns) and a BLAKE2 digest of
sampled blocks (the first and last MiB and 32 blocks spread between, so
taking the key of a 455 MB file reads ~6 MB). Anything else (another key, a
bad magic, header or CRC, a short file) and the index is rebuilt from
``dataset.json`` and the cache rewritten. It is written to a temp file and
renamed over the old one (atomic; not fsynced: after a power cut the CRC
catches a torn file).

A big one is written behind the request that built the index (``save_later``:
one background thread, the newest index per path, older pending ones dropped),
so a split creation or a first listing answers without waiting ~0.4 s for
150 MB at a million images; a small one (~100k images and under) at once. A process that ends before the write only loses the
cache (its temp file is removed by ``remove_stale_temp_files``); ``flush``
waits for pending writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import tempfile
import threading
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..jsonio import TEMP_PREFIX

log = logging.getLogger(__name__)

NAME = ".dataset.index"
MAGIC = b"MODELYARD-INDEX 1\n"
_ALIGN = 64
_EDGE = 1024 * 1024
_BLOCK = 64 * 1024
_SAMPLES = 32
#: caches at least this big are written behind the answer (``save_later``)
BEHIND_BYTES = 32 * 1024 * 1024


def cache_path(dataset_json: Path) -> Path:
    return dataset_json.with_name(NAME)


def file_key(handle: IO[bytes], info: os.stat_result) -> dict[str, Any]:
    """What identifies this version of the open file: size, mtime and a digest of sampled blocks."""
    size = info.st_size
    digest = hashlib.blake2b(digest_size=16)
    if size <= 2 * _EDGE + _SAMPLES * _BLOCK:
        handle.seek(0)
        digest.update(handle.read())
    else:
        spots = [0, size - _EDGE] + [_EDGE + (size - 2 * _EDGE - _BLOCK) * k // (_SAMPLES - 1) for k in range(_SAMPLES)]
        for spot in spots:
            handle.seek(spot)
            digest.update(handle.read(_EDGE if spot in (0, size - _EDGE) else _BLOCK))
    handle.seek(0)
    return {"size": size, "mtime_ns": info.st_mtime_ns, "digest": digest.hexdigest()}


def save(path: Path, key: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write the cache atomically; a failure (disk full, read-only folder) only logs: the index works without it."""
    columns, offset = [], 0
    for name, array in arrays.items():
        columns.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "offset": offset,
                        "nbytes": int(array.nbytes)})
        offset += _aligned(array.nbytes)
    crc = 0
    for array in arrays.values():
        crc = zlib.crc32(np.ascontiguousarray(array).data, crc)
    header = json.dumps({"key": key, "meta": meta, "columns": columns, "crc32": crc}).encode("utf-8")
    start = _aligned(len(MAGIC) + 8 + len(header))
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + NAME + ".", dir=path.parent)
    except OSError as exc:
        log.warning("index cache %s not written: %s", path, exc)
        return
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + len(header).to_bytes(8, "little") + header)
            out.write(b"\0" * (start - len(MAGIC) - 8 - len(header)))
            for array in arrays.values():
                out.write(np.ascontiguousarray(array).data)
                out.write(b"\0" * (_aligned(array.nbytes) - array.nbytes))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        log.warning("index cache %s not written: %s", path, exc)


def load(path: Path, key: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The cached ``(arrays, meta)`` if the cache at ``path`` is sound and of this ``key``; ``None`` otherwise."""
    try:
        with open(path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # missing, or empty (mmap refuses a zero-length file)
        return None
    try:
        return _read(mapped, key)
    except (ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("index cache %s is unusable (%s); rebuilding it", path, exc)
        return None


def _read(mapped: mmap.mmap, key: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    if mapped[: len(MAGIC)] != MAGIC:
        raise ValueError("not an index cache")
    length = int.from_bytes(mapped[len(MAGIC) : len(MAGIC) + 8], "little")
    header = json.loads(mapped[len(MAGIC) + 8 : len(MAGIC) + 8 + length])
    if header["key"] != key:
        return None  # another version of dataset.json: not an error, just stale
    start = _aligned(len(MAGIC) + 8 + length)
    arrays: dict[str, np.ndarray] = {}
    crc = 0
    for column in header["columns"]:
        begin, nbytes = start + int(column["offset"]), int(column["nbytes"])
        if begin + nbytes > len(mapped):
            raise ValueError("the cache is shorter than its header says")
        array = np.frombuffer(mapped, dtype=np.dtype(column["dtype"]), count=nbytes // np.dtype(column["dtype"]).itemsize,
                              offset=begin).reshape(column["shape"])
        crc = zlib.crc32(array.data, crc)
        arrays[column["name"]] = array
    if crc != header["crc32"]:
        raise ValueError("CRC mismatch")
    return arrays, header["meta"]


def _aligned(size: int) -> int:
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


class _BehindWriter:
    """Writes caches one at a time on a daemon thread; a newer index for a path replaces one still waiting."""

    def __init__(self) -> None:
        self._pending: dict[Path, tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]] = {}
        self._busy = False
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()

    def schedule(self, path: Path, key: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        with self._changed:
            self._pending[path] = (key, arrays, meta)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="index-cache-writer", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._pending and not self._changed.wait_for(lambda: bool(self._pending), timeout=30):
                    self._thread = None  # idle: a later schedule starts another
                    return
                path = next(iter(self._pending))
                job = self._pending.pop(path)
                self._busy = True
            try:
                save(path, *job)
            except Exception:  # never lose the thread (and with it every later write) to one bad write
                log.exception("index cache %s not written", path)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)


_WRITER = _BehindWriter()


def save_later(path: Path, key: dict[str, Any], arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """``save`` on the background writer when it is big: the caller goes on with the index it already has in memory.

    A small cache (under ``BEHIND_BYTES``, ~100k images) is written at once:
    it takes tens of milliseconds, and its file is then there when the call returns.
    """
    if sum(array.nbytes for array in arrays.values()) < BEHIND_BYTES:
        save(path, key, arrays, meta)
    else:
        _WRITER.schedule(path, key, arrays, meta)


def flush(timeout: float | None = None) -> bool:
    """Wait until every cache handed to ``save_later`` is written (``False``: ``timeout`` passed first)."""
    return _WRITER.flush(timeout)
