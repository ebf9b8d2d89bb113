"""Where a claimed job runs: the executors behind the one queue.

The queue (``queue.py``) decides *when* a job starts and records how it
ended; an executor decides *where* its worker runs and answers for it:

- ``local`` (``local_executor.py``, the default): worker processes on this
  machine, cold or warm; the queue reserves this machine's devices.
- ``ray`` (``ray_executor.py``): each job is a Ray Job on a Ray cluster
  (``modelyard serve --executor ray --ray-address URL``); the cluster reserves
  CPUs and GPUs, so the queue starts every pending job at once.

Either way the worker is the same ``python -m modelyard.core.jobs.worker``
writing the same job folder, so records, events, SSE, stop and resume do not
depend on the executor. A job launched by a cluster keeps a ``cluster.json``
in its folder (``cluster_job.py``) naming its cluster job, which is how a
restarted server knows which executor answers for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..errors import ExecutorUnavailableError
from ..records import JobRecord
from ..settings import Settings
from ..workspace import Workspace
from .folder import JobFolder
from .kinds import JobKind

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    """What the queue asks of an executor (one instance per server)."""

    name: str
    #: True when the queue must reserve devices (this machine's); False when the cluster schedules them
    reserves_devices: bool

    def connect(self) -> None:
        """Check the executor can run jobs now (the server refuses to start otherwise)."""

    def launch(self, kind: JobKind, folder: Path, job: JobFolder[JobRecord]) -> str:
        """Start the worker of a job claimed for this server; a short description of where it runs.

        Raises ``OSError`` or ``ExecutorUnavailableError`` when it cannot (the queue records the job failed).
        """

    def alive(self, kind: JobKind, folder: Path, record: JobRecord) -> bool:
        """Whether the job's worker still runs (or waits on the cluster to start it)."""

    def waiting_to_start(self, folder: Path) -> bool:
        """True while the cluster holds the job back for resources (no liveness is judged meanwhile)."""

    def lost_note(self, folder: Path, record: JobRecord) -> str:
        """How the worker of a job found not alive ended, for the lost reason (``exited with code 1``)."""

    def kill(self, kind: JobKind, folder: Path, record: JobRecord) -> bool:
        """End the job's worker at once; whether it is gone now."""

    def housekeeping(self) -> None:
        """Once per tick, after supervision (reap finished children, refill warm workers, forget caches)."""

    def shutdown(self) -> None:
        """The server stops: free what this executor holds; running workers go on."""


def make_executor(workspace: Workspace, settings: Settings) -> Executor:
    """The executor ``settings.executor`` names; ``ExecutorUnavailableError`` when it cannot be used."""
    if settings.executor == "local":
        from .local_executor import LocalExecutor

        return LocalExecutor(workspace, settings)
    if settings.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(workspace, settings)
    raise ExecutorUnavailableError(
        f"unknown executor {settings.executor!r} (known: {', '.join(EXECUTORS)})", {"executor": settings.executor})
