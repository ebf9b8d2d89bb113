"""Atomic JSON files: a reader sees the old file or the new one, never a torn one.

Writes go to a temp file in the same folder, are flushed and fsynced, then
``os.replace``d over the target (atomic on POSIX), and the folder is fsynced
so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from .errors import CorruptDataError
from .storage import is_storage_full, storage_full_error

TEMP_PREFIX = ".tmp-"
#: A temp file older than this belongs to a writer that died (a live write takes far less).
STALE_TEMP_AGE_S = 60.0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; on any failure the old file stays and no temp is left."""
    with atomic_writer(path) as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary handle whose content replaces ``path`` atomically when the ``with`` block ends without error.

    For writers that stream (``dataset.json`` rewritten batch by batch): the
    temp file is in the same folder, fsynced, renamed over ``path``, and the
    folder fsynced; an exception in the block (or here) removes the temp and
    leaves ``path`` as it was. A process killed mid-way leaves only a temp
    named ``TEMP_PREFIX...``, which no reader opens and ``remove_stale_temp_files`` removes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if is_storage_full(exc):  # the old file is untouched and the temp is gone: say so clearly
            raise storage_full_error(exc, path.name) from exc  # type: ignore[arg-type]
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Serialise ``obj`` as pretty UTF-8 JSON and write it atomically.

    msgspec, not ``json.dumps(indent=2)`` (pure Python when indenting): a
    100k-image ``dataset.json`` takes 0.1 s instead of 1 s. NaN and infinity
    are written as ``null``, as the API serves them.
    """
    atomic_write_bytes(path, encode_pretty(obj) + b"\n")


def encode_pretty(obj: Any) -> bytes:
    """``obj`` as ``atomic_write_json`` lays it out (indent 2), without the final newline."""
    return msgspec.json.format(_ENCODER.encode(obj), indent=2)


def plain_value(obj: Any) -> Any:
    """Subclasses of str/int/float msgspec does not know (``torch.__version__``, ``numpy.float64``) as plain values."""
    for plain in (str, bool, int, float):
        if isinstance(obj, plain):
            return plain(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_ENCODER = msgspec.json.Encoder(enc_hook=plain_value)


def read_json(path: Path) -> Any:
    """Load a JSON file written by us; a broken one raises ``CorruptDataError`` naming it."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read())
    except json.JSONDecodeError as exc:
        raise CorruptDataError(
            f"{path.name} is corrupt and cannot be read ({exc.msg} at line {exc.lineno})",
            {"file": path.name},
        ) from exc
    except UnicodeDecodeError as exc:
        raise CorruptDataError(f"{path.name} is corrupt and cannot be read (not UTF-8)", {"file": path.name}) from exc


def remove_stale_temp_files(root: Path, min_age_s: float = STALE_TEMP_AGE_S) -> int:
    """Delete temp files left by writers that died mid-way; returns how many were removed.

    Only files untouched for ``min_age_s`` go: a training worker keeps running
    while the server restarts, and its write in progress must not lose its temp file.
    """
    removed = 0
    if not root.exists():
        return 0
    cutoff = time.time() - min_age_s
    for tmp in root.rglob(TEMP_PREFIX + "*"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_file() and not tmp.is_symlink() and tmp.stat().st_mtime <= cutoff:
                tmp.unlink()
                removed += 1
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename already happened
    finally:
        os.close(fd)
