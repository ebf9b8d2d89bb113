"""The ``local`` executor: job workers as processes on this machine (today's behaviour, the default).

Cold workers are started per job, warm ones are taken from the pool
(``spawn.py``); a worker is identified by its pid *and* start time
(``process.py``), so a restarted server adopts the workers that still live.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from ..errors import ModelyardError
from ..records import JobRecord
from ..settings import Settings
from ..workspace import Workspace
from .folder import JobFolder
from .kinds import JobKind
from .process import is_process, kill_worker, start_ticks
from .spawn import WarmPool, spawn_cold


class LocalExecutor:
    """Worker processes on this machine; the queue reserves its devices."""

    name = "local"
    reserves_devices = True

    def __init__(self, workspace: Workspace, settings: Settings, warm: bool = True) -> None:
        """``warm=False``: no warm pool (another executor starts the jobs; this one only adopts old workers)."""
        self.workspace = workspace
        self.pool = WarmPool(workspace.root, settings.warm_workers if warm else 0)
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def connect(self) -> None:
        """Nothing to reach: this machine is always there."""

    def launch(self, kind: JobKind, folder: Path, job: JobFolder[JobRecord]) -> str:
        """Hand the job to a warm worker (or start a cold one) and record the worker's pid and start time."""
        child = self.pool.take(kind, folder) or spawn_cold(kind, folder, self.workspace.root, job.log_path)
        self.children[folder.name] = child

        def record_worker(record: JobRecord) -> JobRecord:
            if record.worker_pid in (None, child.pid):
                record.worker_pid, record.worker_started, record.worker_pgid = child.pid, start_ticks(child.pid), child.pid
            return record

        with contextlib.suppress(FileNotFoundError, ModelyardError):
            job.update(record_worker)
        return f"worker pid {child.pid}"

    def alive(self, kind: JobKind, folder: Path, record: JobRecord) -> bool:
        child = self.children.get(folder.name)
        pid = record.worker_pid
        if child is not None and (pid is None or child.pid == pid):
            return child.poll() is None
        if pid is None:  # claimed by a server that died before it recorded the worker
            claimed = record.claimed_by
            return (claimed is not None and claimed.pid != os.getpid()
                    and is_process(claimed.pid, claimed.started, folder.name))
        return is_process(pid, record.worker_started, folder.name)

    def waiting_to_start(self, folder: Path) -> bool:
        return False

    def lost_note(self, folder: Path, record: JobRecord) -> str:
        child = self.children.get(folder.name)
        return f"exited with code {child.returncode}" if child is not None and child.poll() is not None else "is gone"

    def kill(self, kind: JobKind, folder: Path, record: JobRecord) -> bool:
        """SIGKILL the worker's group when it provably is the job's worker; whether it is gone now."""
        gone = kill_worker(record, folder.name)
        child = self.children.get(folder.name)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
            gone = gone or child.poll() is not None
        return gone

    def housekeeping(self) -> None:
        for job_id, child in list(self.children.items()):
            if child.poll() is not None:
                del self.children[job_id]
        self.pool.fill()

    def shutdown(self) -> None:
        self.pool.shutdown()
