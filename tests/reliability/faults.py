"""A full disk, simulated at the OS boundary for the files below one folder.

``DiskFull(monkeypatch, root)`` makes every write to a file under ``root``
behave like a disk that fills up mid-way: ``write`` stores the first half of
what it was given, then raises ``OSError(ENOSPC)``; ``os.fsync`` of such a
file raises ``ENOSPC`` too (what a delayed-allocation file system reports).
Files elsewhere are untouched, so the test's own files and the rest of the
workspace keep working. Everything else is real: the product's own code
writes, fails and cleans up.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _writing(mode: str) -> bool:
    return any(flag in mode for flag in ("w", "a", "x", "+"))


def _full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FillingFile:
    """A real file object whose ``write`` runs out of space half-way through."""

    def __init__(self, handle: Any, disk: DiskFull) -> None:
        self._handle = handle
        self._disk = disk

    def write(self, data: Any) -> int:
        if not self._disk.active:
            return int(self._handle.write(data))
        view = memoryview(data) if not isinstance(data, str) else data
        self._handle.write(view[: len(view) // 2])
        self._handle.flush()
        self._disk.hits += 1
        raise _full()

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._handle.close()
        except OSError:
            pass  # a full disk may fail the final flush as well

    def __iter__(self) -> Any:
        return iter(self._handle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class DiskFull:
    """Simulate ``ENOSPC`` for files under ``root`` until ``free()`` is called (or the test ends).

    ``match``, when given, narrows it to paths containing that text (e.g. one staging job's prefix).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path, match: str | None = None) -> None:
        self.root = os.path.realpath(root)
        self.match = match
        self.active = True
        self.hits = 0
        real_open, real_fdopen, real_fsync = builtins.open, os.fdopen, os.fsync

        def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = real_open(file, mode, *args, **kwargs)
            if isinstance(file, int):
                return self._wrap(handle, _fd_path(file), mode)
            return self._wrap(handle, os.path.realpath(os.fspath(file)), mode)

        def fake_fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            return self._wrap(real_fdopen(fd, mode, *args, **kwargs), _fd_path(fd), mode)

        def fake_fsync(fd: Any) -> None:
            number = fd if isinstance(fd, int) else fd.fileno()
            if self.active and self._inside(_fd_path(number)):
                self.hits += 1
                raise _full()
            real_fsync(fd)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "fdopen", fake_fdopen)
        monkeypatch.setattr(os, "fsync", fake_fsync)

    def free(self) -> None:
        """Space is available again."""
        self.active = False

    def _inside(self, path: str) -> bool:
        inside = path == self.root or path.startswith(self.root.rstrip(os.sep) + os.sep)
        return inside and (self.match is None or self.match in path)

    def _wrap(self, handle: Any, path: str, mode: str) -> Any:
        if self.active and _writing(mode) and self._inside(path):
            return _FillingFile(handle, self)
        return handle


def files_under(folder: Path) -> list[str]:
    """Every file below ``folder`` (relative paths, sorted); [] when it does not exist."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def temp_files_under(folder: Path) -> list[str]:
    """Leftover atomic-write temp files (``.tmp-*``) below ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".tmp-*"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Contents of every file below ``folder``, to prove nothing changed."""
    return {name: (folder / name).read_bytes() for name in files_under(folder)}
