"""The one queue: every kind of job waits here for its devices, starts once, and is watched while it runs.

One background thread, started by the server's lifespan, ticks every
``Settings.scheduler_interval_s`` (and at once when woken by a new job). Each
tick it

* ends every running job whose worker is gone (pid not alive, or a reused pid)
  with the kind's lost status (``interrupted`` for runs, ``failed`` otherwise),
* kills a worker that made no progress for its kind's liveness timeout (the
  heartbeat is written from progress, so a worker stuck in a collective or a
  deadlock stops beating although its process lives),
* kills a run that ignored a stop request for ``stop_timeout_s`` and records
  it as ``stopped`` with ``killed: true``,
* starts pending jobs, oldest first, when their devices are free: a GPU runs
  one job at a time whatever its kind, CPU training runs one at a time, other
  CPU jobs up to ``cpu_job_slots`` at once. A waiting job reserves what it
  waits for, so a later job cannot overtake it. Each start claims the job
  first (``JobFolder.claim``), so a job is never executed twice, then hands it
  to a warm worker (or starts a cold one).

All state lives in the job folders, so a restarted server rebuilds the queue
from disk and adopts the workers that still live. Workers run in their own
session: stopping the server never stops them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..errors import JobClaimedError, ModelyardError
from ..records import JobError, JobRecord, Run
from ..settings import Settings
from ..timeutil import parse_iso, utc_now_iso
from ..workspace import Workspace
from .folder import STOP_REQUEST, Claimant
from .kinds import KINDS, JobKind, job_devices
from .process import is_process, kill_worker, start_ticks
from .status import TERMINAL_STATUSES
from .spawn import WarmPool, spawn_cold

log = logging.getLogger(__name__)

R = TypeVar("R", bound=JobRecord)

LOST = "without reporting a final status"


@dataclass
class Seen:
    """A job as one tick saw it."""

    kind: JobKind
    folder: Path
    record: JobRecord

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def job_id(self) -> str:
        return self.folder.name


@dataclass(frozen=True)
class Waiting:
    """Where a pending job stands: its 1-based place among all pending jobs, and what it waits for."""

    position: int
    reason: str


@dataclass
class RecoveryReport:
    """What the queue found at server start."""

    adopted: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def queue_key(seen: Seen) -> tuple[str, int, str]:
    """FIFO order: when the job (re-)entered the queue, then creation order on disk, then its id."""
    resumes = seen.record.resumes if isinstance(seen.record, Run) else []
    queued_at = (resumes[-1].at if resumes else None) or seen.record.created_at
    try:
        tie_break = seen.folder.stat().st_mtime_ns
    except OSError:
        tie_break = 0
    return queued_at, tie_break, seen.job_id


def end_by_server(workspace: Workspace, kind: JobKind, folder: Path, status: str, reason: str,
                  expect: frozenset[str], **fields: Any) -> JobRecord | None:
    """Record an end the server decides (lost worker, killed, stopped before it started), with its events.

    Applies only while the job is in one of the ``expect`` statuses (read under
    the job lock), so a worker that wrote its own final status just before is
    never overwritten. ``fields`` are set too (plain values, validated).
    Returns the new record, or ``None`` if skipped.
    """
    job = kind.job(workspace, folder)
    with job.locked():
        try:
            record = job.read()
        except (FileNotFoundError, ModelyardError):
            return None
        if record.status not in expect:
            return None
        record = record.with_fields(**fields, status=status, finished_at=utc_now_iso())
        job.write_locked(record)
        if kind.events:
            from .events import EventLog

            events = EventLog(workspace, folder)
            events.append("status", {"status": status, "reason": reason})
            events.append("end", {"status": status})
    log.info("%s %s: %s (%s)", kind.name, folder.name, status, reason)
    return record


def lost_error(message: str) -> JobError:
    return JobError("WorkerLost", message)


class JobQueue:
    """Starts queued jobs on free devices and watches their workers (see the module docstring)."""

    def __init__(self, workspace: Workspace, settings: Settings) -> None:
        self.workspace = workspace
        self.settings = settings
        self.pool = WarmPool(workspace.root, settings.warm_workers)
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._launched_at: dict[str, float] = {}
        self._stop_seen_at: dict[str, float] = {}
        self._warned: set[str] = set()
        self._ended_records: dict[Path, tuple[tuple[int, int, int], JobRecord]] = {}
        self._tick_lock = threading.RLock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> RecoveryReport:
        """Recover the jobs left by a previous server, warm the worker pool, then supervise in a thread."""
        report = self.recover()
        if self._thread is None or not self._thread.is_alive():
            self._halt.clear()
            self._thread = threading.Thread(target=self._loop, name="modelyard-job-queue", daemon=True)
            self._thread.start()
        return report

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop supervising; idle warm workers exit, running workers go on and the next server adopts them."""
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._tick_lock:
            self.pool.shutdown()

    def wake(self) -> None:
        """Tick now rather than at the next interval (a job was queued or a device freed)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                self.tick()
            except Exception:  # the supervisor must survive any single bad job folder
                log.exception("job queue tick failed")
            self._wake.wait(self.settings.scheduler_interval_s)
            self._wake.clear()

    # -- recovery ------------------------------------------------------------------
    def recover(self) -> RecoveryReport:
        """At server start: adopt running jobs whose worker lives, end the others with their lost status."""
        report = RecoveryReport()
        for seen in self.scan():
            if seen.status == "pending":
                report.pending.append(seen.job_id)
            elif seen.status == "running":
                if self._worker_alive(seen):
                    report.adopted.append(seen.job_id)
                    log.info("%s %s: adopted live worker pid %s", seen.kind.name, seen.job_id, seen.record.worker_pid)
                elif end_by_server(
                    self.workspace, seen.kind, seen.folder, seen.kind.lost_status,
                    f"worker {seen.record.worker_pid} is gone (found at server start)", frozenset({"running"}),
                    error=lost_error(f"The worker process ended {LOST}"),
                ):
                    report.lost.append(seen.job_id)
        return report

    # -- one tick ------------------------------------------------------------------
    def tick(self) -> None:
        with self._tick_lock:
            seen = self.scan()
            for item in seen:
                if item.status == "running":
                    self._supervise(item)
            self._reap()
            self._start_pending(seen)
            self.pool.fill()

    def scan(self) -> list[Seen]:
        """Every job and its record; an ended job's record is re-read only when its file was replaced."""
        found = []
        ended: dict[Path, tuple[tuple[int, int, int], JobRecord]] = {}
        for kind in KINDS.values():
            for folder in kind.folders(self.workspace):
                job = kind.job(self.workspace, folder)
                try:
                    stat = job.record_path.stat()
                    key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # records are replaced, never edited in place
                    cached = self._ended_records.get(folder)
                    record = cached[1] if cached is not None and cached[0] == key else job.read()
                    if record.status in TERMINAL_STATUSES:
                        ended[folder] = (key, record)
                    found.append(Seen(kind, folder, record))
                except FileNotFoundError:
                    continue  # deleted while we looked
                except ModelyardError as exc:
                    if str(folder) not in self._warned:
                        self._warned.add(str(folder))
                        log.warning("ignoring job folder %s: %s", folder, exc)
        self._ended_records = ended  # a job that ended long ago costs a stat per tick, not a JSON parse
        return found

    def _reap(self) -> None:
        for job_id, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[job_id]
                self._launched_at.pop(job_id, None)

    # -- supervision ---------------------------------------------------------------
    def _worker_alive(self, seen: Seen) -> bool:
        record = seen.record
        child = self._children.get(seen.job_id)
        pid = record.worker_pid
        if child is not None and (pid is None or child.pid == pid):
            return child.poll() is None
        if pid is None:  # claimed by a server that died before it recorded the worker
            claimed = record.claimed_by
            return (claimed is not None and claimed.pid != os.getpid()
                    and is_process(claimed.pid, claimed.started, seen.job_id))
        return is_process(pid, record.worker_started, seen.job_id)

    def _supervise(self, seen: Seen) -> None:
        kind, record = seen.kind, seen.record
        if not self._worker_alive(seen):
            child = self._children.get(seen.job_id)
            note = f"exited with code {child.returncode}" if child is not None and child.poll() is not None else "is gone"
            seen.record = end_by_server(
                self.workspace, kind, seen.folder, kind.lost_status,
                f"worker {record.worker_pid} {note} {LOST}", frozenset({"running"}),
                error=lost_error(f"The worker process {note} {LOST}"),
            ) or record
            return
        if record.stop_requested and self._stop_overdue(seen):
            self._kill_and_end(seen, "stopped",
                               f"the worker did not stop within {self.settings.stop_timeout_s:g} s and was killed",
                               killed=True)
            return
        silence, limit = self._silence(seen)
        if silence is not None and silence > limit:
            self._kill_and_end(seen, kind.lost_status, f"no progress for {silence:.0f} s",
                               error=lost_error(f"The worker made no progress for {silence:.0f} s and was killed"))

    def _silence(self, seen: Seen) -> tuple[float | None, float]:
        """Seconds since the worker last showed progress, and the limit for its kind."""
        limit = float(getattr(self.settings, seen.kind.liveness))
        age = seen.kind.job(self.workspace, seen.folder).heartbeat_age_s()
        started = self._launched_at.get(seen.job_id)
        if started is not None and time.monotonic() - started < self.settings.worker_start_grace_s:
            # a fresh worker is still importing and loading data: it gets the start grace
            return (age, max(limit, self.settings.worker_start_grace_s)) if age is not None else (None, limit)
        if age is not None:
            return age, limit
        started_at = parse_iso(seen.record.started_at)
        return (time.time() - started_at if started_at is not None else None), max(limit, self.settings.worker_start_grace_s)

    def _stop_overdue(self, seen: Seen) -> bool:
        try:
            requested_at = (seen.folder / STOP_REQUEST).stat().st_mtime
        except OSError:  # the worker consumed the request file: count from when we first saw it
            requested_at = self._stop_seen_at.setdefault(seen.job_id, time.time())
        return time.time() - requested_at > self.settings.stop_timeout_s

    def _kill_and_end(self, seen: Seen, status: str, reason: str, **fields: Any) -> None:
        """Kill a worker that must not go on (ignored stop, no progress) and record why, under the job lock.

        A ``stopped`` job is recorded only once its worker is really dead; a
        lost one is recorded even when the process cannot be identified as the
        worker (its pid was reused), since the worker is gone either way.
        """
        job = seen.kind.job(self.workspace, seen.folder)
        with job.locked():
            try:
                record = job.read()
            except (FileNotFoundError, ModelyardError):
                return
            if record.status != "running":
                return
            gone = kill_worker(record, seen.job_id)
            child = self._children.get(seen.job_id)
            if child is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
                gone = gone or child.poll() is not None
            log.warning("%s %s: killed worker pid %s (%s)", seen.kind.name, seen.job_id, record.worker_pid, reason)
            if not gone and status == "stopped":
                return
            seen.record = end_by_server(self.workspace, seen.kind, seen.folder, status, reason,
                                        frozenset({"running"}), **fields) or record
        self._stop_seen_at.pop(seen.job_id, None)

    def kill(self, kind: JobKind, folder: Path) -> None:
        """Kill the worker of a job that is being deleted (the caller holds the job lock; the tick reaps it)."""
        try:
            record = kind.job(self.workspace, folder).read()
        except (FileNotFoundError, ModelyardError):
            return
        if record.status == "running":
            kill_worker(record, folder.name)

    # -- the queue -------------------------------------------------------------------
    def plan(self, seen: list[Seen]) -> list[tuple[Seen, str | None]]:
        """Pending jobs in queue order, each with ``None`` (may start now) or the reason it waits."""
        gpus: dict[str, str] = {}  # device -> the job holding or reserving it
        cpu_training: str | None = None
        cpu_slots: list[str] = []
        for item in seen:
            if item.status != "running":
                continue
            for device in job_devices(item.record):
                if device != "cpu":
                    gpus[device] = item.job_id
                elif item.kind.exclusive_cpu:
                    cpu_training = item.job_id
                else:
                    cpu_slots.append(item.job_id)
        planned: list[tuple[Seen, str | None]] = []
        for item in sorted((i for i in seen if i.status == "pending"), key=queue_key):
            devices = job_devices(item.record)
            reasons = []
            for device in sorted(devices):
                if device != "cpu":
                    if device in gpus:
                        reasons.append(f"{device} is taken by {gpus[device]}")
                elif item.kind.exclusive_cpu:
                    if cpu_training is not None:
                        reasons.append(f"the CPU is training {cpu_training}")
                elif len(cpu_slots) >= self.settings.cpu_job_slots:
                    reasons.append(f"all {self.settings.cpu_job_slots} CPU job slot(s) are taken ({', '.join(cpu_slots)})")
            # started now, or waiting: either way it holds its devices, so later jobs cannot overtake it
            for device in devices:
                if device != "cpu":
                    gpus.setdefault(device, item.job_id)
                elif item.kind.exclusive_cpu:
                    cpu_training = cpu_training or item.job_id
                elif not reasons:
                    cpu_slots.append(item.job_id)
            planned.append((item, "; ".join(reasons) or None))
        return planned

    def waiting(self, folder: Path) -> Waiting | None:
        """Where the pending job in ``folder`` stands (``None`` when it is not pending)."""
        with self._tick_lock:
            planned = self.plan(self.scan())
        for position, (item, reason) in enumerate(planned, start=1):
            if item.folder == folder:
                return Waiting(position, reason or ("starting" if self.running else
                                                    "no server is running to start it (start `modelyard serve`)"))
        return None

    def with_place(self, folder: Path, record: R) -> R:
        """``record`` with ``queue_position`` and ``waiting_reason`` (both ``None`` unless it is pending)."""
        waiting = self.waiting(folder) if record.status == "pending" else None
        return msgspec.structs.replace(record, queue_position=waiting.position if waiting else None,
                                       waiting_reason=waiting.reason if waiting else None)

    def _start_pending(self, seen: list[Seen]) -> None:
        for item, reason in self.plan(seen):
            if reason is None:
                self._launch(item)

    def _launch(self, seen: Seen) -> None:
        """Claim a pending job for this server, hand it to a worker and record the worker."""
        kind = seen.kind
        job = kind.job(self.workspace, seen.folder)
        try:
            job.claim(Claimant.this_process("server"))
        except (JobClaimedError, FileNotFoundError):
            return  # someone else claimed it first (the CLI in the foreground), or it was deleted
        except ModelyardError as exc:
            log.warning("cannot claim %s: %s", seen.job_id, exc)
            return
        try:
            child = self.pool.take(kind, seen.folder) or spawn_cold(kind, seen.folder, self.workspace.root, job.log_path)
        except OSError as exc:
            log.exception("%s %s: cannot start its worker", kind.name, seen.job_id)
            end_by_server(self.workspace, kind, seen.folder, "failed", "the worker could not be started",
                          frozenset({"running"}), error=JobError("WorkerStartError", f"Cannot start the worker: {exc}"))
            return
        self._children[seen.job_id] = child
        self._launched_at[seen.job_id] = time.monotonic()
        self._stop_seen_at.pop(seen.job_id, None)

        def record_worker(record: JobRecord) -> JobRecord:
            if record.worker_pid in (None, child.pid):
                record.worker_pid, record.worker_started, record.worker_pgid = child.pid, start_ticks(child.pid), child.pid
            return record

        with contextlib.suppress(FileNotFoundError, ModelyardError):
            job.update(record_worker)
        log.info("%s %s: worker pid %s started", kind.name, seen.job_id, child.pid)
