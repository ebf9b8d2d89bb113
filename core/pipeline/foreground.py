"""Running jobs in this process, in the foreground: what the CLI does where the server starts workers.

The CLI builds its services with ``defer_launch`` as the job launcher, so
``create`` writes the same ``pending`` record the API would, and then calls the
same worker function the worker process would (``run_evaluation``,
``run_export``, ``train_run``) right here, reporting progress as it goes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ..evaluation.service import evaluation_job
from ..export.service import export_job
from ..jobs import JobFolder
from ..plugin_manager import PluginHost
from ..training.run_files import TRAIN_LOG, find_run_dir
from ..workspace import Workspace

Progress = Callable[[int, int], None]
POLL_S = 0.25


def defer_launch(job: JobFolder, kind: str) -> int:
    """A job launcher that starts nothing: the caller runs the job itself (``run_*_job`` below)."""
    return 0


def experiment_of_run(workspace: Workspace, project_id: str, run_id: str) -> str:
    """The experiment id a run belongs to (the CLI names runs alone; the API also names the experiment)."""
    workspace.existing_project_dir(project_id)
    return find_run_dir(workspace, project_id, run_id).parent.parent.name


def _follow(job: JobFolder, work: Callable[[], str], on_progress: Progress | None) -> str:
    """Run ``work`` in a thread and pass the record's ``progress`` to ``on_progress`` until it returns."""
    outcome: dict[str, str] = {}
    thread = threading.Thread(target=lambda: outcome.update(status=work()), name=f"job-{job.job_id}", daemon=True)
    thread.start()
    last: tuple[int, int] | None = None
    while True:
        thread.join(POLL_S)
        if on_progress is not None:
            try:
                progress = job.read().get("progress") or {}
                current = (int(progress.get("done") or 0), int(progress.get("total") or 0))
            except (OSError, ValueError, TypeError):
                current = last or (0, 0)
            if current != last:
                on_progress(*current)
                last = current
        if not thread.is_alive():
            break
    return outcome.get("status", "failed")


def run_evaluation_job(workspace: Workspace, eval_dir: Path, plugins: PluginHost,
                       on_progress: Progress | None = None) -> str:
    """Run a pending evaluation here; returns its final status."""
    from ..evaluation.worker import run_evaluation  # torch and torchmetrics: only when a job really runs

    job = evaluation_job(workspace, eval_dir)
    return _follow(job, lambda: run_evaluation(workspace, eval_dir, plugins.architectures), on_progress)


def run_export_job(workspace: Workspace, export_dir: Path, plugins: PluginHost,
                   on_progress: Progress | None = None) -> str:
    """Run a pending export (with its verification) here; returns its final status."""
    from ..export.worker import run_export

    job = export_job(workspace, export_dir)
    return _follow(job, lambda: run_export(workspace, export_dir, plugins), on_progress)


def train_in_foreground(workspace: Workspace, run_dir: Path, plugins: PluginHost, progress_bar: bool = True) -> str:
    """Train a pending run here (Lightning's progress bar on the terminal, the log also in ``train.log``).

    ``RUN_DIR_ENV`` tells extra DDP ranks, which re-run this command line,
    which run folder to join (the CLI checks ``ddp_child_run_dir`` first).
    """
    from ..training.engine import RUN_DIR_ENV, train_run

    os.environ[RUN_DIR_ENV] = str(run_dir)
    handler = logging.FileHandler(run_dir / TRAIN_LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        return train_run(workspace, run_dir, progress_bar=progress_bar, plugins=plugins)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        os.environ.pop(RUN_DIR_ENV, None)
