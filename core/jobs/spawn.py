"""Starting worker processes: cold (a fresh ``python -m``) or warm (pre-started, already imported).

Every worker is ``python -m modelyard.core.jobs.worker`` in its own session
(so it outlives the server), with ``close_fds`` and no standard input but
its assignment. A warm worker has imported torch, Lightning, the plugins and
the job code before it is needed and waits for one line on its standard input
naming its job; it runs that one job and exits, and the pool starts its
replacement. When the server goes away an idle warm worker reads end-of-file
and exits; one that is running a job goes on, like a cold one.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from .kinds import JobKind

log = logging.getLogger(__name__)

WORKER_MODULE = "modelyard.core.jobs.worker"
#: A warm worker that dies before its first job this many times in a row disables the pool (cold starts remain).
MAX_WARM_FAILURES = 3


def cold_command(kind: JobKind, folder: Path, workspace_root: Path) -> list[str]:
    """argv of a worker that runs one job from a fresh interpreter (this server's)."""
    return [sys.executable, "-m", WORKER_MODULE, "run", kind.name, str(folder), "--workspace", str(workspace_root)]


def warm_command(workspace_root: Path) -> list[str]:
    return [sys.executable, "-m", WORKER_MODULE, "warm", "--workspace", str(workspace_root)]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def start_worker(argv: list[str], cwd: Path, log_path: Path, stdin: int) -> subprocess.Popen[bytes]:
    """A worker process in its own session (it outlives the server), output appended to ``log_path``."""
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(argv, cwd=cwd, stdin=stdin, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=_environment())


def spawn_cold(kind: JobKind, folder: Path, workspace_root: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a worker for one job, output appended to the job's log, cwd in the job folder.

    (Anything written by accident stays inside the job folder.)
    """
    return start_worker(cold_command(kind, folder, workspace_root), folder, log_path, subprocess.DEVNULL)


class WarmPool:
    """Keeps ``size`` warm workers (idle or running their job); ``take`` hands an idle one a job (``None`` if none)."""

    def __init__(self, workspace_root: Path, size: int) -> None:
        self.workspace_root = Path(workspace_root)
        self.size = max(0, size)
        self.log_path = self.workspace_root / ".logs" / "warm-workers.log"
        self._idle: list[subprocess.Popen[bytes]] = []
        self._busy: list[subprocess.Popen[bytes]] = []
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self._failures < MAX_WARM_FAILURES

    def fill(self) -> None:
        """Drop idle workers that died (counting failures) and finished busy ones; start new ones up to ``size``."""
        alive = []
        for worker in self._idle:
            if worker.poll() is None:
                alive.append(worker)
            else:
                self._failures += 1
                log.warning("warm worker %s exited before its first job (code %s); see %s",
                            worker.pid, worker.returncode, self.log_path)
                if not self.enabled:
                    log.error("warm workers disabled after %d failures: jobs start cold", self._failures)
        self._idle = alive
        self._busy = [worker for worker in self._busy if worker.poll() is None]
        while self.enabled and len(self._idle) + len(self._busy) < self.size:
            try:
                self._idle.append(self._spawn())
            except OSError as exc:
                self._failures += 1
                log.warning("cannot start a warm worker: %s", exc)
                return

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return start_worker(warm_command(self.workspace_root), self.workspace_root, self.log_path, subprocess.PIPE)

    def take(self, kind: JobKind, folder: Path) -> subprocess.Popen[bytes] | None:
        """Give the job to an idle warm worker; ``None`` when there is none (the caller starts a cold one)."""
        while self._idle:
            worker = self._idle.pop(0)
            if worker.poll() is not None:
                continue
            try:
                assert worker.stdin is not None
                worker.stdin.write(json.dumps({"kind": kind.name, "folder": str(folder)}).encode() + b"\n")
                worker.stdin.close()
            except (BrokenPipeError, OSError):
                continue
            self._failures = 0
            self._busy.append(worker)
            return worker
        return None

    def shutdown(self) -> None:
        """Idle workers hold no job: they are ended at once. Workers running a job are left to finish."""
        for worker in self._idle:
            worker.kill()
            worker.wait()
            if worker.stdin is not None:
                worker.stdin.close()
        self._idle = []
