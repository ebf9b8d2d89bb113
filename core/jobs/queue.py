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

Where a worker runs is its executor's business (``executors.py``): processes
on this machine (``local``, the default) or Ray Jobs on a cluster (``ray``),
which reserves the cluster's devices itself, so with it every pending job
starts at once and waits, if it must, in the cluster's own queue.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from ..errors import ExecutorUnavailableError, JobClaimedError, ModelyardError
from ..records import JobError, JobRecord, Run
from ..settings import Settings
from ..timeutil import parse_iso, utc_now_iso
from ..workspace import Workspace
from .cluster_job import forget_cluster_job, read_cluster_job
from .executors import Executor, make_executor
from .folder import STOP_REQUEST, Claimant
from .kinds import KINDS, JobKind, job_devices
from .local_executor import LocalExecutor
from .spawn import WarmPool
from .status import TERMINAL_STATUSES

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
        #: this machine's workers: the executor of every job when ``settings.executor`` is local, and the one
        #: that answers for jobs a local server left running whatever the executor is now
        self.local = LocalExecutor(workspace, settings, warm=settings.executor == "local")
        self.executor: Executor = self.local if settings.executor == "local" else make_executor(workspace, settings)
        self._launched_at: dict[str, float] = {}
        self._stop_seen_at: dict[str, float] = {}
        self._warned: set[str] = set()
        self._ended_records: dict[Path, tuple[tuple[int, int, int], JobRecord]] = {}
        self._tick_lock = threading.RLock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pool(self) -> WarmPool:
        """This machine's warm workers (empty unless the executor is local)."""
        return self.local.pool

    @property
    def _children(self) -> dict[str, subprocess.Popen[bytes]]:
        return self.local.children

    def executor_of(self, folder: Path) -> Executor | None:
        """Who answers for the job in ``folder``: the cluster executor it was submitted to, or this machine.

        ``None`` for a cluster job when this server runs without that cluster (it cannot see the job).
        """
        cluster_job = read_cluster_job(folder)
        if cluster_job is None:
            return self.local
        return self.executor if cluster_job.executor == self.executor.name else None

    def check_hardware_executor(self, hardware_executor: str) -> None:
        """Refuse a run that must train on a Ray cluster when this server runs jobs on this machine (409)."""
        if hardware_executor == "ray" and self.executor.name != "ray":
            raise ExecutorUnavailableError(
                "hardware.executor: ray trains across the workers of a Ray cluster, but this server runs jobs on "
                "this machine: start it with `modelyard serve --executor ray --ray-address URL` (docs/cluster.md)",
                {"field": "config.hardware.executor", "executor": self.executor.name})

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> RecoveryReport:
        """Reach the executor, recover the jobs left by a previous server, then supervise in a thread.

        ``ExecutorUnavailableError`` when the executor cannot run jobs (a cluster that does not answer).
        """
        self.executor.connect()
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
            self.executor.shutdown()
            if self.executor is not self.local:
                self.local.shutdown()

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
                executor = self.executor_of(seen.folder)
                if executor is None:
                    self._warn_unsupervised(seen)
                elif executor.alive(seen.kind, seen.folder, seen.record):
                    report.adopted.append(seen.job_id)
                    log.info("%s %s: adopted live worker pid %s (%s executor)", seen.kind.name, seen.job_id,
                             seen.record.worker_pid, executor.name)
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
            running = {item.job_id for item in seen if item.status == "running"}
            for job_id in set(self._launched_at) - running - set(self._children):
                del self._launched_at[job_id]  # ended: its start grace is over
            self._start_pending(seen)
            self.executor.housekeeping()
            if self.executor is not self.local:
                self.local.housekeeping()

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

    # -- supervision ---------------------------------------------------------------
    def _warn_unsupervised(self, seen: Seen) -> None:
        if seen.job_id not in self._warned:
            self._warned.add(seen.job_id)
            cluster_job = read_cluster_job(seen.folder)
            log.warning("%s %s runs on a %s cluster (%s) this server does not use (executor %s): not supervised",
                        seen.kind.name, seen.job_id, cluster_job.executor if cluster_job else "?",
                        cluster_job.address if cluster_job else "?", self.executor.name)

    def _supervise(self, seen: Seen) -> None:
        kind, record = seen.kind, seen.record
        executor = self.executor_of(seen.folder)
        if executor is None:
            self._warn_unsupervised(seen)
            return
        if not executor.alive(kind, seen.folder, record):
            note = executor.lost_note(seen.folder, record)
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
        if executor.waiting_to_start(seen.folder):
            return  # the cluster holds it back for resources: no progress is expected yet
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
            executor = self.executor_of(seen.folder)
            gone = executor.kill(seen.kind, seen.folder, record) if executor is not None else False
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
        executor = self.executor_of(folder)
        if record.status == "running" and executor is not None:
            executor.kill(kind, folder, record)

    # -- the queue -------------------------------------------------------------------
    def plan(self, seen: list[Seen]) -> list[tuple[Seen, str | None]]:
        """Pending jobs in queue order, each with ``None`` (may start now) or the reason it waits."""
        if not self.executor.reserves_devices:  # the cluster schedules its devices: every job goes to it now
            return [(item, None) for item in sorted((i for i in seen if i.status == "pending"), key=queue_key)]
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

    def waiting_places(self) -> dict[Path, Waiting]:
        """Where every pending job stands, from one plan of the queue (a list reads them all at once)."""
        with self._tick_lock:
            planned = self.plan(self.scan())
        idle = "starting" if self.running else "no server is running to start it (start `modelyard serve`)"
        return {item.folder: Waiting(position, reason or idle) for position, (item, reason) in enumerate(planned, start=1)}

    def waiting(self, folder: Path) -> Waiting | None:
        """Where the pending job in ``folder`` stands (``None`` when it is not pending)."""
        return self.waiting_places().get(folder)

    def with_place(self, folder: Path, record: R, places: dict[Path, Waiting] | None = None) -> R:
        """``record`` with ``queue_position`` and ``waiting_reason`` (both ``None`` unless it is pending).

        ``places`` (from ``waiting_places``) saves planning the queue again for each record of a list.
        """
        waiting = None
        if record.status == "pending":
            waiting = places.get(folder) if places is not None else self.waiting(folder)
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
        forget_cluster_job(seen.folder)  # an earlier attempt's cluster job does not answer for this one
        try:
            where = self.executor.launch(kind, seen.folder, job)
        except (OSError, ModelyardError) as exc:
            log.exception("%s %s: cannot start its worker", kind.name, seen.job_id)
            end_by_server(self.workspace, kind, seen.folder, "failed", "the worker could not be started",
                          frozenset({"running"}), error=JobError("WorkerStartError", f"Cannot start the worker: {exc}"))
            return
        self._launched_at[seen.job_id] = time.monotonic()
        self._stop_seen_at.pop(seen.job_id, None)
        log.info("%s %s: %s started", kind.name, seen.job_id, where)
