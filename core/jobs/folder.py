"""One job's folder: its record file, read and written under the job's lock, and the claim.

Every kind of job (training run, evaluation, export) is a folder with one JSON
record (``run.json``, ``evaluation.json``, ``export.json``), a log, and a
``heartbeat`` file its worker touches while it makes progress. Every
read-modify-write of a record holds the lock named by the job id (thread +
``flock``) and every write is atomic, so the server, a worker and the CLI never
lose each other's updates.

Exactly one executor per job: before anything runs, a claimant (the server's
queue, or the CLI running a job in the foreground) moves the record from
``pending`` to ``running`` under the lock and records itself in
``claimed_by``. A second claimant gets ``JobClaimedError``; a worker refuses a
job that was not claimed for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

from ..errors import JobClaimedError, ModelyardError
from ..ids import is_valid_id, new_id
from ..jsonio import atomic_write_json
from ..records import JobClaim, JobError, JobRecord, read_record
from ..timeutil import utc_now_iso
from ..workspace import Workspace
from .cluster_job import runs_on_cluster
from .process import pid_alive, start_ticks
from .status import ACTIVE_STATUSES

log = logging.getLogger(__name__)

R = TypeVar("R", bound=JobRecord)

HEARTBEAT = "heartbeat"
#: A stop request for the job's worker (runs honour it after the current step).
STOP_REQUEST = "stop.request"


@dataclass(frozen=True)
class Claimant:
    """Who executes a job: ``server`` (its queue starts a worker) or ``cli`` (a command runs it in its own process)."""

    by: str
    pid: int

    @classmethod
    def this_process(cls, by: str) -> Claimant:
        return cls(by, os.getpid())

    def as_record(self) -> JobClaim:
        return JobClaim(by=self.by, pid=self.pid, started=start_ticks(self.pid), at=utc_now_iso())


class JobFolder(Generic[R]):
    """One job's folder and its record file, read and written as ``record_type``."""

    def __init__(self, workspace: Workspace, folder: Path, record_name: str, log_name: str,
                 record_type: type[R]) -> None:
        self.workspace = workspace
        self.folder = folder
        self.record_path = folder / record_name
        self.log_path = folder / log_name
        self.record_type = record_type

    @property
    def job_id(self) -> str:
        return self.folder.name

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self.workspace.locks.hold(self.job_id):
            yield

    def read(self) -> R:
        return read_record(self.record_path, self.record_type)

    def write(self, record: R) -> None:
        with self.locked():
            self.write_locked(record)

    def write_locked(self, record: R) -> None:
        """Write ``record`` (derived fields left out); the caller holds the job lock."""
        atomic_write_json(self.record_path, record.stored())

    def update(self, change: Callable[[R], R]) -> R:
        """Read, apply ``change`` (which returns the new record), write back: atomically and under the job lock."""
        with self.locked():
            record = change(self.read())
            self.write_locked(record)
            return record

    # -- the claim -----------------------------------------------------------------
    def claim(self, claimant: Claimant) -> R:
        """Move a ``pending`` job to ``running`` for ``claimant``; ``JobClaimedError`` when it is not pending.

        A CLI claimant is also the worker (its pid is recorded as ``worker_pid``);
        the server's queue records the worker's pid once it has started it.
        """
        with self.locked():
            record = self.read()
            if record.status != "pending":
                raise JobClaimedError(self._refusal(record), {
                    "job_id": self.job_id, "status": record.status,
                    "claimed_by": msgspec.to_builtins(record.claimed_by)})
            record.status = "running"
            record.claimed_by = claimant.as_record()
            record.finished_at = None
            record.error = None
            record.started_at = record.started_at or utc_now_iso()
            cli = claimant.by == "cli"
            record.worker_pid = claimant.pid if cli else None
            record.worker_started = start_ticks(claimant.pid) if cli else None
            if cli:
                record.worker_pgid = os.getpgid(0)
            with contextlib.suppress(FileNotFoundError):  # a request of an earlier attempt would read as a stop
                (self.folder / STOP_REQUEST).unlink()
            self.touch_heartbeat(claimant.pid)  # liveness counts from the claim, not from an old attempt
            self.write_locked(record)
            return record

    def _refusal(self, record: R) -> str:
        claimed = record.claimed_by
        if record.status == "running" and claimed:
            return (f"{self.job_id} is already being run by the {claimed.by} (pid {claimed.pid}, "
                    f"since {claimed.at}); it runs once")
        return f"{self.job_id} is {record.status}, not pending; only a pending job can be started"

    def assigned_to_me(self, record: R) -> bool:
        """Worker side: whether this process may execute the job (claimed, and for this process or not yet bound)."""
        claimed = record.claimed_by
        if record.status != "running" or claimed is None:
            return False
        me = os.getpid()
        return record.worker_pid in (None, me) or claimed.pid == me

    # -- worker side -----------------------------------------------------------------
    def claimed_record(self) -> R | None:
        """The record of a claimed (``running``) job, to execute; ``None`` when it is not running or gone."""
        try:
            record = self.read()
        except FileNotFoundError:
            return None
        return record if record.status == "running" and record.claimed_by else None

    def finish(self, **fields: Any) -> None:
        """Record the final fields of a ``running`` job (plain values, validated); a job deleted meanwhile is left alone."""

        def change(record: R) -> R:
            return record.with_fields(**fields, finished_at=utc_now_iso()) if record.status == "running" else record

        try:
            self.update(change)
        except FileNotFoundError:
            log.info("%s was deleted while its worker ran", self.job_id)

    def report_progress(self, done: int, total: int) -> None:
        """``progress`` {done, total}, and a heartbeat: progress is what liveness is judged by."""
        with contextlib.suppress(FileNotFoundError):
            self.update(lambda record: record.with_fields(progress={"done": done, "total": total}))
            self.touch_heartbeat(os.getpid())

    def touch_heartbeat(self, pid: int) -> None:
        touch_heartbeat(self.folder, pid)

    def heartbeat_age_s(self) -> float | None:
        return heartbeat_age_s(self.folder)

    # -- readers -----------------------------------------------------------------------
    def fail_if_orphaned(self, record: R) -> R:
        """A reader with no queue (the CLI): an active job whose claimant and worker are both gone is ``failed``.

        A job on a cluster is never judged here: its worker's pid is another node's (the queue asks the cluster).
        """
        if record.status not in ACTIVE_STATUSES or not _orphaned(record) or runs_on_cluster(self.folder):
            return record

        def mark(current: R) -> R:
            if current.status in ACTIVE_STATUSES and _orphaned(current):
                current.status = "failed"
                current.finished_at = utc_now_iso()
                current.error = JobError("WorkerLost", WORKER_LOST)
            return current

        try:
            updated = self.update(mark)
        except FileNotFoundError:
            return record
        if updated.status == "failed" and record.status != "failed":
            log.warning("%s: %s", self.job_id, WORKER_LOST)
        return updated


WORKER_LOST = "worker exited unexpectedly"


def _orphaned(record: JobRecord) -> bool:
    """Running, and neither its worker nor its claimant lives (pending jobs wait for a queue: never orphans)."""
    if record.status != "running":
        return False
    claimed_pid = record.claimed_by.pid if record.claimed_by else None
    return not pid_alive(record.worker_pid) and not pid_alive(claimed_pid)


def touch_heartbeat(folder: Path, pid: int) -> None:
    atomic_write_json(folder / HEARTBEAT, {"pid": pid, "time": utc_now_iso()})


def heartbeat_age_s(folder: Path) -> float | None:
    """Seconds since the worker's last heartbeat, or ``None`` when it never wrote one."""
    try:
        return max(0.0, time.time() - (folder / HEARTBEAT).stat().st_mtime)
    except FileNotFoundError:
        return None


# -- folders ------------------------------------------------------------------------------
def remove_job_folder(workspace: Workspace, folder: Path) -> None:
    """Delete a job folder: renamed into staging first, so a crash never leaves half a job that still lists."""
    trash = workspace.new_staging_dir(f"delete-{folder.name}")
    folder.rename(trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


def new_job_folder(parent: Path, prefix: str) -> tuple[str, Path]:
    """A fresh ``<prefix>-xxxxxxxx`` folder under ``parent`` (retries on the rare id collision)."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        job_id = new_id(prefix)
        folder = parent / job_id
        try:
            folder.mkdir()
            return job_id, folder
        except FileExistsError:
            continue


def existing_job_folder(parent: Path, job_id: str, prefix: str, record_name: str, not_found: ModelyardError) -> Path:
    """The folder of job ``job_id`` under ``parent``; ``not_found`` is raised for a malformed id or a missing record.

    The id is validated before it touches a path, so a hostile id never names a folder.
    """
    if not is_valid_id(job_id, prefix):
        raise not_found
    folder = parent / job_id
    if not (folder / record_name).is_file():
        raise not_found
    return folder


def iter_job_folders(parent: Path, prefix: str, record_name: str) -> Iterator[Path]:
    """Job folders under ``parent`` whose name is a valid id of ``prefix`` and that hold a record."""
    if not parent.is_dir():
        return
    for folder in sorted(parent.iterdir()):
        if is_valid_id(folder.name, prefix) and (folder / record_name).is_file():
            yield folder


def list_records(jobs: Iterable[JobFolder[R]]) -> list[R]:
    """The records of ``jobs`` (orphans marked failed), oldest first; unreadable ones are logged and skipped."""
    records = []
    for job in jobs:
        try:
            records.append(job.fail_if_orphaned(job.read()))
        except FileNotFoundError:
            continue  # deleted while listing
        except Exception as exc:  # one broken record must not hide the others
            log.warning("skipping job %s in listing: %s", job.job_id, exc)
    return sorted(records, key=lambda r: (r.created_at, r.id))
