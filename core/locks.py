"""Per-project locks, safe across threads *and* processes.

Every read-modify-write of a project's files happens under its lock, so two
concurrent requests (or two server processes, or a server and a CLI) cannot
lose each other's update. A thread lock serialises threads of this process;
``fcntl.flock`` on a sidecar file in ``<workspace>/.locks/`` serialises
processes. Lock files live outside the project folder so deleting a project
under its lock is safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path


class LockTable:
    """Named re-entrant locks backed by sidecar files in one folder."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._local = threading.local()

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        """Hold the lock ``name`` (re-entrant within one thread)."""
        _check_name(name)
        with self._guard:
            lock = self._locks.setdefault(name, threading.RLock())
        with lock:
            depth: dict[str, int] = self._local.__dict__.setdefault("depth", {})
            if depth.get(name, 0):
                depth[name] += 1
                try:
                    yield
                finally:
                    depth[name] -= 1
                return
            self._folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                depth[name] = 1
                try:
                    yield
                finally:
                    depth[name] = 0
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _check_name(name: str) -> None:
    """Lock names become file names in the lock folder: refuse anything that could leave it."""
    if not name or name.startswith(".") or len(name) > 200 or any(ch in name for ch in ("/", "\\", "\x00")):
        raise ValueError(f"invalid lock name {name!r}")
