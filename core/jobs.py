"""Short background jobs (evaluations, exports): a JSON record in a job folder, a worker process.

A job is a folder with one record file (``evaluation.json``, ``export.json``)
and a log. The server writes the record as ``pending`` and starts
``python -m modelyard worker <kind> <job_dir> --workspace ROOT`` in its own
session; the worker sets ``running``, reports ``progress`` {done, total} and
ends with ``completed`` or ``failed``. Like training workers, a job worker
talks to the server only through its folder, so the server can restart
meanwhile. Every read-modify-write of a record holds the lock named by the
job id (thread + ``flock``), and every write is atomic.

A job whose worker died (pid gone) while ``pending``/``running`` is marked
``failed`` with "worker exited unexpectedly": at server start and whenever
the record is read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import CorruptDataError, ModelyardError
from .jsonio import atomic_write_json, read_json
from .timeutil import utc_now_iso
from .training.run_files import pid_alive
from .training.scheduler import is_worker_process, parse_iso
from .workspace import Workspace

log = logging.getLogger(__name__)

ACTIVE_STATUSES = frozenset({"pending", "running"})
WORKER_LOST = "worker exited unexpectedly"
WORKER_LOST_ERROR: dict[str, str] = {"type": "WorkerLost", "message": WORKER_LOST}
#: a pending job with no worker pid older than this is an orphan (the server died before spawning it)
SPAWN_GRACE_S = 60.0
KILL_WAIT_S = 5.0


class JobFolder:
    """One job's folder and its record file, read and written under the job's lock."""

    def __init__(self, workspace: Workspace, folder: Path, record_name: str, log_name: str) -> None:
        self.workspace = workspace
        self.folder = folder
        self.record_path = folder / record_name
        self.log_path = folder / log_name

    @property
    def job_id(self) -> str:
        return self.folder.name

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self.workspace.locks.hold(self.job_id):
            yield

    def read(self) -> dict[str, Any]:
        record = read_json(self.record_path)
        if not isinstance(record, dict):
            raise CorruptDataError(f"{self.record_path.name} of {self.job_id} is not an object", {"file": self.record_path.name})
        return record

    def write(self, record: dict[str, Any]) -> None:
        with self.locked():
            atomic_write_json(self.record_path, record)

    def update(self, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, apply ``mutate`` in place, write back: atomically and under the job lock."""
        with self.locked():
            record = self.read()
            mutate(record)
            atomic_write_json(self.record_path, record)
            return record

    def claim(self) -> dict[str, Any] | None:
        """Worker side: move a ``pending`` job to ``running``; ``None`` when it is not pending (or gone)."""
        with self.locked():
            try:
                record = self.read()
            except FileNotFoundError:
                return None
            if record.get("status") != "pending":
                return None
            record.update(status="running", started_at=utc_now_iso(), worker_pid=os.getpid())
            atomic_write_json(self.record_path, record)
            return record

    def finish(self, **fields: Any) -> None:
        """Worker side: record the final fields of a ``running`` job (a job deleted meanwhile is left alone)."""

        def mutate(record: dict[str, Any]) -> None:
            if record.get("status") == "running":
                record.update(fields, finished_at=utc_now_iso())

        try:
            self.update(mutate)
        except FileNotFoundError:
            log.info("%s was deleted while its worker ran", self.job_id)

    def report_progress(self, done: int, total: int) -> None:
        """Worker side: ``progress`` {done, total}."""
        with contextlib.suppress(FileNotFoundError):
            self.update(lambda r: r.update(progress={"done": done, "total": total}))

    def fail_if_orphaned(self, record: dict[str, Any], at_start: bool = False) -> dict[str, Any]:
        """Mark an active job whose worker is gone as ``failed``; returns the (possibly updated) record."""
        if record.get("status") not in ACTIVE_STATUSES or not self._orphaned(record, at_start):
            return record

        def mark(current: dict[str, Any]) -> None:
            if current.get("status") in ACTIVE_STATUSES and self._orphaned(current, at_start):
                current.update(status="failed", finished_at=utc_now_iso(), error=dict(WORKER_LOST_ERROR))

        try:
            updated = self.update(mark)
        except FileNotFoundError:  # deleted meanwhile
            return record
        if updated.get("status") == "failed" and record.get("status") != "failed":
            log.warning("%s: %s", self.job_id, WORKER_LOST)
        return updated

    def _orphaned(self, record: dict[str, Any], at_start: bool) -> bool:
        pid = record.get("worker_pid")
        if pid:
            return not pid_alive(pid) and not _is_our_live_child(pid)
        if not at_start:
            return False  # the server is about to start the worker
        created = parse_iso(record.get("created_at"))
        return created is None or time.time() - created > SPAWN_GRACE_S


def worker_command(kind: str, job_dir: Path, workspace_root: Path) -> list[str]:
    """argv of a job worker, with this server's interpreter."""
    return [sys.executable, "-m", "modelyard", "worker", kind, str(job_dir), "--workspace", str(workspace_root)]


_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def _is_our_live_child(pid: int) -> bool:
    with _children_lock:
        child = _children.get(pid)
    return child is not None and child.poll() is None


def launch(job: JobFolder, kind: str) -> int:
    """Start the worker of a pending job in its own session, output appended to the job's log.

    Records ``worker_pid`` in the record (the worker itself sets ``running``) and
    reaps the child in a daemon thread so it never lingers as a zombie. A
    worker that cannot be started marks the job ``failed`` at once.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        with open(job.log_path, "ab") as log_file:
            child = subprocess.Popen(
                worker_command(kind, job.folder, job.workspace.root),
                cwd=job.folder,  # anything written by accident stays inside the job folder
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=env,
            )
    except OSError as exc:
        log.exception("%s: cannot start its worker", job.job_id)
        error = {"type": "WorkerStartError", "message": f"cannot start the worker: {exc}"}
        job.update(lambda r: r.update(status="failed", finished_at=utc_now_iso(), error=error))
        raise
    with _children_lock:
        _children[child.pid] = child

    def reap() -> None:
        child.wait()
        with _children_lock:
            _children.pop(child.pid, None)

    threading.Thread(target=reap, name=f"reap-{job.job_id}", daemon=True).start()

    def record_pid(record: dict[str, Any]) -> None:
        record["worker_pid"] = child.pid

    with contextlib.suppress(FileNotFoundError, ModelyardError):
        job.update(record_pid)
    return child.pid


def stop_worker(record: dict[str, Any], job_id: str) -> None:
    """Kill the worker of an active job (only if its command line names the job: pids get reused)."""
    pid = record.get("worker_pid")
    if record.get("status") not in ACTIVE_STATUSES or not isinstance(pid, int) or not is_worker_process(pid, job_id):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid and pid != os.getpgrp():
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while pid_alive(pid) and not _reaped(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _reaped(pid: int) -> bool:
    with _children_lock:
        child = _children.get(pid)
    return child is not None and child.poll() is not None


def remove_job_folder(workspace: Workspace, folder: Path) -> None:
    """Delete a job folder: renamed into staging first, so a crash never leaves half a job that still lists."""
    trash = workspace.new_staging_dir(f"delete-{folder.name}")
    folder.rename(trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


def new_job_folder(parent: Path, prefix: str) -> tuple[str, Path]:
    """A fresh ``<prefix>-xxxxxxxx`` folder under ``parent`` (retries on the rare id collision)."""
    from .ids import new_id

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
    from .ids import is_valid_id

    if not is_valid_id(job_id, prefix):
        raise not_found
    folder = parent / job_id
    if not (folder / record_name).is_file():
        raise not_found
    return folder


def iter_job_folders(parent: Path, prefix: str, record_name: str) -> Iterator[Path]:
    """Job folders under ``parent`` whose name is a valid id of ``prefix`` and that hold a record."""
    from .ids import is_valid_id

    if not parent.is_dir():
        return
    for folder in sorted(parent.iterdir()):
        if is_valid_id(folder.name, prefix) and (folder / record_name).is_file():
            yield folder


def list_records(jobs: Iterable[JobFolder]) -> list[dict[str, Any]]:
    """The records of ``jobs`` (orphans marked failed), oldest first; unreadable ones are logged and skipped."""
    records = []
    for job in jobs:
        try:
            records.append(job.fail_if_orphaned(job.read()))
        except FileNotFoundError:
            continue  # deleted while listing
        except Exception as exc:  # one broken record must not hide the others
            log.warning("skipping job %s in listing: %s", job.job_id, exc)
    return sorted(records, key=lambda r: (str(r.get("created_at", "")), str(r.get("id"))))


def recover_orphans(jobs: Iterable[JobFolder]) -> list[str]:
    """At server start: mark active jobs whose worker is gone as failed; returns their ids."""
    failed = []
    for job in jobs:
        try:
            before = job.read()
            after = job.fail_if_orphaned(before, at_start=True)
        except Exception as exc:
            log.warning("cannot check job %s at start: %s", job.job_id, exc)
            continue
        if after.get("status") == "failed" and before.get("status") != "failed":
            failed.append(job.job_id)
    return failed


def resolve_job_dir(workspace: Workspace, job_dir: Path, collection: str, prefix: str, record_name: str) -> Path:
    """``job_dir`` resolved; ``ValueError`` unless it is ``projects/<proj>/<collection>/<job-id>`` of ``workspace``."""
    from .ids import is_valid_id

    resolved = Path(job_dir).resolve()
    try:
        parts = resolved.relative_to(workspace.projects_dir).parts
    except ValueError:
        raise ValueError(f"{job_dir} is not inside {workspace.projects_dir}") from None
    shape_ok = len(parts) == 3 and is_valid_id(parts[0], "proj") and parts[1] == collection and is_valid_id(parts[2], prefix)
    if not shape_ok or not (resolved / record_name).is_file():
        raise ValueError(f"{job_dir} is not a {collection} folder")
    return resolved


def worker_main(argv: list[str], kind: str, run: Callable[[Workspace, Path], str], collection: str, prefix: str,
                record_name: str) -> int:
    """Shared entry point of job workers: ``JOB_DIR --workspace ROOT``; exit 0 completed, 1 failed, 2 usage."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"modelyard worker {kind}", description=f"Run one {kind} job (internal).")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--workspace", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workspace = Workspace(args.workspace)
    try:
        job_dir = resolve_job_dir(workspace, args.job_dir, collection, prefix, record_name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = run(workspace, job_dir)
    return 0 if status in ("completed", "skipped") else 1
