"""Which process is which: liveness and identity of worker processes by pid.

A pid alone is not an identity (the kernel reuses pids), so a job records its
worker's pid *and* the process start time (``/proc/<pid>/stat`` field 22, in
clock ticks since boot); a process is the job's worker only when both match.
That also covers warm workers, whose command line names no job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from ..records import JobRecord

#: How long a killed worker gets to disappear.
KILL_WAIT_S = 5.0


def pid_alive(pid: object) -> bool:
    """True while ``pid`` names a live process (a zombie counts as gone)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = _stat_fields(pid)
    return state is None or state[0] != "Z"


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``None`` when it is gone or unreadable)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        return int(fields[19])  # field 22 of /proc/<pid>/stat; fields[0] is field 3 (the state)
    except (IndexError, ValueError):
        return None


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name (which may itself hold spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def is_process(pid: object, started: object, job_id: str) -> bool:
    """Whether ``pid`` is alive and is the process recorded for ``job_id``.

    With a recorded start time the two must match; records written before
    start times were kept fall back to the command line naming the job.
    """
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    if isinstance(started, int):
        return start_ticks(pid) == started
    try:
        return job_id.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_process(pid: int, pgid: object = None) -> None:
    """SIGKILL ``pid`` (its whole group when ``pgid`` is its own group, never ours) and wait for it to go."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if isinstance(pgid, int) and pgid > 1 and pgid != os.getpgrp() and os.getpgid(pid) == pgid:
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def is_extra_rank() -> bool:
    """True in a DDP rank other than global rank 0 (Lightning sets ``LOCAL_RANK``/``NODE_RANK`` in the ranks it starts)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def kill_worker(record: JobRecord, job_id: str) -> bool:
    """Kill the recorded worker of ``job_id`` when it provably is that worker; whether it is gone now.

    A pid that now belongs to another process is never killed (it is not
    this job's worker, so the worker is gone too).
    """
    pid = record.worker_pid
    if pid is None:
        return True
    if not is_process(pid, record.worker_started, job_id):
        return True
    kill_process(pid, record.worker_pgid)
    return not pid_alive(pid)
