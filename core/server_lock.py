"""One server per workspace: ``modelyard serve`` holds ``.locks/server.lock`` while it runs.

A second server on the same workspace would run its own start-up recovery
(clearing ``.staging`` under an import in progress, re-judging runs) and its
own run scheduler next to the first one's, so it is refused with a message
naming the server that holds the workspace. The lock is a non-blocking
``flock``: the kernel drops it when the holder exits, even by SIGKILL, so a
crashed server never blocks the next start. Worker processes never inherit it
(the descriptor is close-on-exec and workers start with ``close_fds``).
The foreground ``modelyard train`` does not take it: it coordinates with a
server through the per-run locks, like a worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from .errors import WorkspaceInUseError
from .timeutil import utc_now_iso

LOCK_FILE = "server.lock"


class ServerLock:
    """The held lock; ``release`` (or process exit) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def acquire_server_lock(workspace_root: Path, address: str) -> ServerLock:
    """Take the workspace's server lock, or raise ``WorkspaceInUseError`` naming the holder."""
    folder = Path(workspace_root) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise WorkspaceInUseError(
            f"Workspace {workspace_root} is already served by another modelyard server "
            f"(pid {holder.get('pid', '?')}, {holder.get('address', '?')}, since {holder.get('started_at', '?')}). "
            "Stop that server, or start this one with another --workspace.",
            {"workspace": str(workspace_root), "holder": holder},
        ) from None
    except BaseException:
        os.close(fd)
        raise
    record = json.dumps({"pid": os.getpid(), "address": address, "started_at": utc_now_iso()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    return ServerLock(fd, path)


def _read_holder(fd: int) -> dict[str, Any]:
    """What the holder wrote about itself (empty when unreadable: the message then shows '?')."""
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def serving_server(workspace_root: Path) -> dict[str, Any] | None:
    """What the server holding ``workspace_root`` wrote about itself (pid, address), or ``None`` when none does.

    Probes the lock without keeping it: the CLI asks this to decide whether to
    submit its jobs to that server's queue or to run them itself.
    """
    path = Path(workspace_root) / ".locks" / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
