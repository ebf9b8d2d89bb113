"""The device queue and the supervision of training workers (server side).

One background thread, started by the app's lifespan, ticks every
``Settings.scheduler_interval_s``. Each tick it

* marks ``interrupted`` every running run whose worker is gone (pid not alive)
  or silent (heartbeat older than ``heartbeat_timeout_s``),
* kills the process group of a worker that ignored a stop request for
  ``stop_timeout_s`` and records the run as ``stopped`` with ``killed: true``,
* starts pending runs, oldest first, when every device they need is free
  (one run per device; a waiting run reserves its devices so later runs on
  the same devices cannot overtake it),
* reaps the worker processes it started.

All state lives in the run folders (``docs/internals/run-protocol.md``), so a
restarted server rebuilds the queue from disk and adopts the workers that are
still alive. Workers run in their own session: stopping or killing the server
never stops them, and ``shutdown`` deliberately leaves them running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ModelyardError
from ..jsonio import atomic_write_json
from ..settings import Settings
from ..timeutil import utc_now_iso
from ..workspace import Workspace
from .run_files import (
    HEARTBEAT,
    RUN_JSON,
    STOP_REQUEST,
    TRAIN_LOG,
    EventLog,
    heartbeat_age_s,
    iter_run_dirs,
    pid_alive,
    read_run,
    run_lock_name,
)

log = logging.getLogger(__name__)

LOST = "without reporting a final status"
#: How long a killed worker gets to disappear before the run is recorded anyway.
KILL_WAIT_S = 5.0


def parse_iso(value: str | None) -> float | None:
    """Epoch seconds of an ISO ``...Z`` timestamp written by ``utc_now_iso`` (None when absent or malformed)."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


def worker_command(run_dir: Path, workspace_root: Path, resume: bool) -> list[str]:
    """The worker's argv: the protocol's entry point, with the interpreter of this server."""
    command = [sys.executable, "-m", "modelyard", "worker", "train", str(run_dir), "--workspace", str(workspace_root)]
    return [*command, "--resume"] if resume else command


def spawn_worker(run_dir: Path, workspace_root: Path, resume: bool) -> subprocess.Popen[bytes]:
    """Start a worker in its own session (so it outlives the server), output appended to ``train.log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(run_dir / TRAIN_LOG, "ab") as train_log:
        return subprocess.Popen(
            worker_command(run_dir, workspace_root, resume),
            cwd=run_dir,  # anything the worker writes by accident stays inside the run folder
            stdin=subprocess.DEVNULL,
            stdout=train_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )


def is_worker_process(pid: int | None, run_id: str) -> bool:
    """True when ``pid`` is alive and its command line names ``run_id`` (guards against a reused pid)."""
    if not pid or not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return run_id.encode() in cmdline


def queue_key(run_dir: Path, record: dict[str, Any]) -> tuple[str, int, str]:
    """FIFO order of pending runs: the time they (re-)entered the queue, then creation order on disk."""
    resumes = record.get("resumes") or []
    queued_at = (resumes[-1].get("at") if resumes else None) or record.get("created_at") or ""
    try:
        tie_break = (run_dir / "config.yaml").stat().st_mtime_ns
    except OSError:
        tie_break = 0
    return str(queued_at), tie_break, str(record.get("id", ""))


def run_devices(record: dict[str, Any]) -> frozenset[str]:
    devices = record.get("devices") or ["cpu"]
    return frozenset(str(d) for d in devices)


def finish_by_server(
    workspace: Workspace,
    run_dir: Path,
    status: str,
    reason: str,
    expect: frozenset[str],
    **fields: Any,
) -> dict[str, Any] | None:
    """Record a transition the server makes itself (``interrupted``, ``stopped``) with its events.

    Only applies while the run is still in one of the ``expect`` statuses (read
    under the run lock), so a worker that wrote its own final status just
    before is never overwritten. Returns the new record, or ``None`` if skipped.
    """
    with workspace.locks.hold(run_lock_name(run_dir)):
        try:
            record = read_run(run_dir)
        except (FileNotFoundError, ModelyardError):
            return None
        if record.get("status") not in expect:
            return None
        record.update(fields)
        record["status"] = status
        record["finished_at"] = utc_now_iso()
        atomic_write_json(run_dir / RUN_JSON, record)
        events = EventLog(workspace, run_dir)
        events.append("status", {"status": status, "reason": reason})
        events.append("end", {"status": status})
    log.info("run %s: %s (%s)", run_dir.name, status, reason)
    return record


@dataclass
class RecoveryReport:
    """What the scheduler found at server start."""

    adopted: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


@dataclass
class _Seen:
    run_dir: Path
    record: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.record.get("status"))


class RunScheduler:
    """Starts queued runs on free devices and watches the workers (see the module docstring)."""

    def __init__(self, workspace: Workspace, settings: Settings) -> None:
        self.workspace = workspace
        self.settings = settings
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._launched_at: dict[str, float] = {}
        self._stop_seen_at: dict[str, float] = {}
        self._warned: set[str] = set()
        self._tick_lock = threading.Lock()
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> RecoveryReport:
        """Recover the runs left by a previous server, then supervise in a background thread."""
        report = self.recover()
        if self._thread is None or not self._thread.is_alive():
            self._halt.clear()
            self._thread = threading.Thread(target=self._loop, name="modelyard-run-scheduler", daemon=True)
            self._thread.start()
        return report

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop supervising. Workers keep running; the next server adopts them."""
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """Tick now rather than at the next interval (a run was queued or a device freed)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                self.tick()
            except Exception:  # the supervisor must survive any single bad run folder
                log.exception("run scheduler tick failed")
            self._wake.wait(self.settings.scheduler_interval_s)
            self._wake.clear()

    # -- recovery ------------------------------------------------------------
    def recover(self) -> RecoveryReport:
        """At server start: adopt running runs whose worker lives, mark the others interrupted."""
        report = RecoveryReport()
        for seen in self._scan():
            run_id = str(seen.record.get("id", seen.run_dir.name))
            if seen.status == "pending":
                report.pending.append(run_id)
            elif seen.status == "running":
                if pid_alive(seen.record.get("worker_pid")):
                    report.adopted.append(run_id)
                    log.info("run %s: adopted live worker pid %s", run_id, seen.record.get("worker_pid"))
                elif finish_by_server(
                    self.workspace, seen.run_dir, "interrupted",
                    f"worker {seen.record.get('worker_pid')} is gone (found at server start)",
                    frozenset({"running"}),
                    error={"type": "WorkerLost", "message": f"The worker process ended {LOST}"},
                ):
                    report.interrupted.append(run_id)
        return report

    # -- one tick --------------------------------------------------------------
    def tick(self) -> None:
        with self._tick_lock:
            seen = self._scan()
            for item in seen:
                if item.status == "running":
                    self._supervise(item)
            self._reap()
            self._start_pending(seen)

    def _scan(self) -> list[_Seen]:
        found = []
        for run_dir in iter_run_dirs(self.workspace):
            try:
                found.append(_Seen(run_dir, read_run(run_dir)))
            except FileNotFoundError:
                continue  # deleted while we looked
            except ModelyardError as exc:
                if str(run_dir) not in self._warned:
                    self._warned.add(str(run_dir))
                    log.warning("ignoring run folder %s: %s", run_dir, exc)
        return found

    def _reap(self) -> None:
        for run_id, child in list(self._children.items()):
            if child.poll() is not None:
                del self._children[run_id]
                self._launched_at.pop(run_id, None)

    # -- supervision -----------------------------------------------------------
    def _supervise(self, seen: _Seen) -> None:
        record, run_dir = seen.record, seen.run_dir
        run_id = str(record.get("id", run_dir.name))
        pid = record.get("worker_pid")
        child = self._children.get(run_id)
        if child is not None and child.pid == pid:
            alive = child.poll() is None
            exit_note = f"exited with code {child.returncode}" if not alive else ""
        else:
            # No pid recorded: nothing to check but the heartbeat (real workers always record theirs).
            alive = pid_alive(pid) if pid else True
            exit_note = "is gone"
        if not alive:
            updated = finish_by_server(
                self.workspace, run_dir, "interrupted", f"worker {pid} {exit_note} without reporting a final status",
                frozenset({"running"}),
                error={"type": "WorkerLost", "message": f"The worker process {exit_note} {LOST}"},
            )
            seen.record = updated or seen.record
            return
        if record.get("stop_requested") and self._stop_overdue(run_id, run_dir):
            self._kill_and_finish(
                seen, run_id, "stopped",
                f"the worker did not stop within {self.settings.stop_timeout_s:g} s and was killed", killed=True,
            )
            return
        silence, limit = self._silence(run_id, run_dir, record)
        if silence is not None and silence > limit:
            self._kill_and_finish(
                seen, run_id, "interrupted", f"no heartbeat for {silence:.0f} s",
                error={"type": "WorkerLost", "message": f"The worker sent no heartbeat for {silence:.0f} s"},
            )

    def _silence(self, run_id: str, run_dir: Path, record: dict[str, Any]) -> tuple[float | None, float]:
        """Seconds the worker has been silent, and the limit that applies to it."""
        age = heartbeat_age_s(run_dir)
        if age is not None:
            return age, self.settings.heartbeat_timeout_s
        # No heartbeat yet: the worker is still starting (imports, data); it gets the start grace.
        limit = max(self.settings.heartbeat_timeout_s, self.settings.worker_start_grace_s)
        if run_id in self._launched_at:
            return time.monotonic() - self._launched_at[run_id], limit
        started = parse_iso(record.get("started_at"))
        return (time.time() - started if started is not None else None), limit

    def _stop_overdue(self, run_id: str, run_dir: Path) -> bool:
        try:
            requested_at = (run_dir / STOP_REQUEST).stat().st_mtime
        except OSError:  # the worker consumed the request file: count from when we first saw it
            requested_at = self._stop_seen_at.setdefault(run_id, time.time())
        return time.time() - requested_at > self.settings.stop_timeout_s

    def _kill_and_finish(self, seen: _Seen, run_id: str, status: str, reason: str, **fields: Any) -> None:
        """Kill a worker that must not go on (ignored stop, silent) and record why, under the run lock.

        A ``stopped`` run is recorded only once its worker is really dead; an
        ``interrupted`` one (silent worker) is recorded even when the process
        cannot be identified as the worker (its pid was reused), since the
        worker is gone either way.
        """
        with self.workspace.locks.hold(run_lock_name(seen.run_dir)):
            try:
                record = read_run(seen.run_dir)
            except (FileNotFoundError, ModelyardError):
                return
            if record.get("status") != "running":
                return
            if not self._kill_group(record, run_id) and status != "interrupted":
                return
            seen.record = finish_by_server(
                self.workspace, seen.run_dir, status, reason, frozenset({"running"}), **fields
            ) or record
        self._stop_seen_at.pop(run_id, None)

    def _kill_group(self, record: dict[str, Any], run_id: str) -> bool:
        """SIGKILL the worker's process group, only when it provably is this run's worker."""
        pid, pgid = record.get("worker_pid"), record.get("worker_pgid")
        child = self._children.get(run_id)
        ours = child is not None and child.pid == pid and child.poll() is None
        if not (ours or is_worker_process(pid, run_id)):
            if pid_alive(pid) and run_id not in self._warned:
                self._warned.add(run_id)
                log.warning("run %s: process %s does not look like its worker; not killing it", run_id, pid)
            return not pid_alive(pid)
        target = pgid if isinstance(pgid, int) and pgid > 1 and pgid != os.getpgrp() else None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if target is not None and os.getpgid(pid) == target:
                os.killpg(target, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(KILL_WAIT_S)
        else:
            deadline = time.monotonic() + KILL_WAIT_S
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        log.warning("run %s: killed worker pid %s (group %s)", run_id, pid, target)
        return True

    # -- the queue ---------------------------------------------------------------
    def _start_pending(self, seen: list[_Seen]) -> None:
        busy: set[str] = set()
        for item in seen:
            if item.status == "running":
                busy |= run_devices(item.record)
        waiting = sorted((i for i in seen if i.status == "pending"), key=lambda i: queue_key(i.run_dir, i.record))
        for item in waiting:
            devices = run_devices(item.record)
            if not devices & busy:
                self._launch(item.run_dir)
            busy |= devices  # started, or reserved for this run so later runs cannot overtake it

    def queue_position(self, run_dir: Path) -> int | None:
        """1-based place of a pending run among the pending runs (None when it is not pending)."""
        waiting = sorted(
            (item for item in self._scan() if item.status == "pending"), key=lambda i: queue_key(i.run_dir, i.record)
        )
        for position, item in enumerate(waiting, start=1):
            if item.run_dir == run_dir:
                return position
        return None

    def _launch(self, run_dir: Path) -> None:
        """Start the worker of a pending run and record it as running (both under the run lock)."""
        run_id = run_dir.name
        with self.workspace.locks.hold(run_lock_name(run_dir)):
            try:
                record = read_run(run_dir)
            except (FileNotFoundError, ModelyardError):
                return
            if record.get("status") != "pending":
                return
            age = heartbeat_age_s(run_dir)
            if age is not None and age < self.settings.heartbeat_timeout_s:
                return  # another process is starting this run already (``modelyard train`` in the foreground)
            resumes = record.get("resumes") or []
            resume = bool(resumes) and resumes[-1].get("checkpoint") is not None
            for leftover in (HEARTBEAT, STOP_REQUEST):  # from an earlier attempt: would read as stale / as a stop
                with contextlib.suppress(FileNotFoundError):
                    (run_dir / leftover).unlink()
            try:
                child = spawn_worker(run_dir, self.workspace.root, resume)
            except OSError as exc:
                log.exception("run %s: cannot start its worker", run_id)
                record.update(status="failed", finished_at=utc_now_iso(),
                              error={"type": "WorkerStartError", "message": f"Cannot start the worker: {exc}"})
                atomic_write_json(run_dir / RUN_JSON, record)
                events = EventLog(self.workspace, run_dir)
                events.append("status", {"status": "failed", "reason": "the worker could not be started"})
                events.append("end", {"status": "failed"})
                return
            now = utc_now_iso()
            record.update(status="running", worker_pid=child.pid, worker_pgid=child.pid, finished_at=None,
                          error=None, stop_requested=False, killed=False)
            record["started_at"] = record.get("started_at") or now
            timings = record.setdefault("timings", {})
            created = parse_iso(record.get("created_at"))
            if timings.get("queued_s") is None and created is not None:
                timings["queued_s"] = round(max(0.0, time.time() - created), 3)
            atomic_write_json(run_dir / RUN_JSON, record)
        self._children[run_id] = child
        self._launched_at[run_id] = time.monotonic()
        self._stop_seen_at.pop(run_id, None)
        log.info("run %s: worker pid %s started%s", run_id, child.pid, " (resume)" if resume else "")
