"""The CLI's side of the job layer: run a job here, or hand it to the server that serves the workspace.

A command (``modelyard train``, ``run``, ``evaluate``, ``export``) creates its
job through the same service as the API (same checks, same ``pending``
record), then calls ``run_or_submit``:

- when a ``modelyard serve`` holds the workspace, the job stays in that
  server's queue (its device reservations hold, its worker runs it) and the
  command follows it from the job folder, reporting progress, until it ends;
- otherwise the command claims the job for itself and runs it in this process.

Either way the job is claimed exactly once, so a server and a command never
both execute it. If the server goes away while the job still waits, the
command claims it and runs it itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import JobClaimedError
from ..records import JobProgress, JobRecord, RunProgress
from ..server_lock import serving_server
from ..workspace import Workspace
from .folder import Claimant, JobFolder
from .status import TERMINAL_STATUSES

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
EventSink = Callable[[dict[str, Any]], None]
POLL_S = 0.25


def progress_of(record: JobRecord) -> tuple[int, int]:
    """``(done, total)`` of any job record: images of an evaluation/export, steps of a training run."""
    progress = getattr(record, "progress", None)
    if isinstance(progress, RunProgress):
        per_epoch = progress.steps_per_epoch
        return max(0, progress.epoch - 1) * per_epoch + progress.step, progress.total_epochs * per_epoch
    if isinstance(progress, JobProgress):
        return progress.done, progress.total
    return 0, 0


def run_or_submit(
    workspace: Workspace,
    job: JobFolder[Any],
    work: Callable[[], str],
    on_progress: Progress | None = None,
    on_event: EventSink | None = None,
    on_submitted: Callable[[dict[str, Any]], None] | None = None,
    report_here: bool = True,
) -> str:
    """Execute the pending ``job`` exactly once (see the module docstring); returns its final status.

    ``work`` runs the job in this process once it is claimed here.
    ``on_event`` gets the job's ``events.jsonl`` entries while a server runs it;
    ``on_submitted`` is told which server took it; ``report_here`` whether
    ``on_progress`` also reports a job run here (training shows Lightning's own bar).
    """
    told = False
    while True:
        server = serving_server(workspace.root)
        if server is None:
            try:
                job.claim(Claimant.this_process("cli"))
            except JobClaimedError:
                pass  # a server started meanwhile and took it: follow it
            else:
                return _with_progress(job, work, on_progress if report_here else None)
        elif on_submitted is not None and not told:
            on_submitted(server)
            told = True
        status = follow(workspace, job, on_progress, on_event)
        if status is not None:
            return status


def follow(workspace: Workspace, job: JobFolder[Any], on_progress: Progress | None = None,
           on_event: EventSink | None = None) -> str | None:
    """Report a job another process executes until it ends; ``None`` if it still waits and no server serves.

    Reads only the job folder (record and ``events.jsonl``), like the server's SSE stream.
    """
    from .events import EventLog

    events = EventLog(workspace, job.folder)
    last_event = 0
    last_progress: tuple[int, int] | None = None
    while True:
        record = job.fail_if_orphaned(job.read())
        if on_event is not None and events.path.exists():
            for event in events.read(after_id=last_event):
                last_event = event["id"]
                on_event(event)
        current = progress_of(record)
        if on_progress is not None and current != last_progress and current[1]:
            on_progress(*current)
            last_progress = current
        status = record.status
        if status in TERMINAL_STATUSES:
            return status
        if status == "pending" and serving_server(workspace.root) is None:
            return None
        time.sleep(POLL_S)


def _with_progress(job: JobFolder[Any], work: Callable[[], str], on_progress: Progress | None) -> str:
    """Run ``work`` here, passing the record's progress to ``on_progress`` while it runs."""
    if on_progress is None:
        return work()
    outcome: dict[str, str] = {}
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome["status"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"job-{job.job_id}", daemon=True)
    thread.start()
    last: tuple[int, int] | None = None
    while True:
        thread.join(POLL_S)
        try:
            current = progress_of(job.read())
        except (OSError, ValueError):
            current = last or (0, 0)
        if current != last and current[1]:
            on_progress(*current)
            last = current
        if not thread.is_alive():
            break
    if failure:
        raise failure[0]
    return outcome.get("status", "failed")


Submitted = Callable[[dict[str, Any]], None]  # the serving server's lock record


def train_or_follow(workspace: Workspace, run_dir: Path, plugins: Any, progress_bar: bool = True,
                    on_progress: Progress | None = None, on_submitted: Submitted | None = None) -> str:
    """A pending run, trained here or by the server that serves the workspace; returns its final status."""
    from .kinds import TRAIN

    return run_or_submit(workspace, TRAIN.job(workspace, run_dir), lambda: train_here(workspace, run_dir, plugins, progress_bar),
                         on_progress=on_progress, on_submitted=on_submitted, report_here=False)


def evaluate_or_follow(workspace: Workspace, eval_dir: Path, plugins: Any, on_progress: Progress | None = None,
                       on_submitted: Submitted | None = None) -> str:
    """A pending evaluation, run here or by the server's queue; returns its final status."""
    from ..evaluation.worker import run_evaluation  # torch and torchmetrics: only when a job really runs
    from .kinds import EVALUATE

    return run_or_submit(workspace, EVALUATE.job(workspace, eval_dir), lambda: run_evaluation(workspace, eval_dir, plugins),
                         on_progress=on_progress, on_submitted=on_submitted)


def export_or_follow(workspace: Workspace, export_dir: Path, plugins: Any, on_progress: Progress | None = None,
                     on_submitted: Submitted | None = None) -> str:
    """A pending export (with its verification), run here or by the server's queue; returns its final status."""
    from ..export.worker import run_export
    from .kinds import EXPORT

    return run_or_submit(workspace, EXPORT.job(workspace, export_dir), lambda: run_export(workspace, export_dir, plugins),
                         on_progress=on_progress, on_submitted=on_submitted)


def experiment_of_run(workspace: Workspace, project_id: str, run_id: str) -> str:
    """The experiment id a run belongs to (the CLI names runs alone; the API also names the experiment)."""
    from ..training.run_folder import find_run_dir

    workspace.existing_project_dir(project_id)
    return find_run_dir(workspace, project_id, run_id).parent.parent.name


def train_here(workspace: Workspace, run_dir: Path, plugins: Any, progress_bar: bool = True) -> str:
    """Train a run claimed by this process (Lightning's progress bar on the terminal, the log also in ``train.log``).

    ``RUN_DIR_ENV`` tells extra DDP ranks, which re-run this command line,
    which run folder to join (the CLI checks ``ddp_child_run_dir`` first).
    """
    from ..training.worker.engine import RUN_DIR_ENV, train_run
    from ..training.run_folder import TRAIN_LOG, read_run
    from ..training.worker.job import resumes_from_checkpoint

    os.environ[RUN_DIR_ENV] = str(run_dir)
    handler = logging.FileHandler(run_dir / TRAIN_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        resume = resumes_from_checkpoint(read_run(run_dir))
        return train_run(workspace, run_dir, resume=resume, progress_bar=progress_bar, plugins=plugins)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        os.environ.pop(RUN_DIR_ENV, None)
