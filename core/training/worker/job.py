"""Training as a job kind: the worker function the job layer calls for a claimed run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ModelyardError
from ...jobs.cluster_job import EXECUTOR_ENV
from ...records import Run
from ...workspace import Workspace
from ..run_folder import read_run

if TYPE_CHECKING:
    from ...plugin_manager import PluginHost


def resumes_from_checkpoint(record: Run) -> bool:
    """Whether the run's latest queueing was a resume that continues from a checkpoint."""
    return bool(record.resumes) and record.resumes[-1].checkpoint is not None


def trains_on_ray_workers(run_dir: Path) -> bool:
    """A ``hardware.executor: ray`` run inside its Ray Job: this process drives Ray Train instead of training.

    Anywhere else such a run goes to ``train_run``, which refuses it with the reason (recorded as the run's error).
    """
    if os.environ.get(EXECUTOR_ENV) != "ray":
        return False
    from .engine import load_run_config

    try:
        return load_run_config(run_dir).hardware.executor == "ray"
    except ModelyardError:
        return False  # train_run reports the broken config


def run_training_job(workspace: Workspace, run_dir: Path, plugins: PluginHost) -> str:
    """Train the run in ``run_dir`` (every DDP rank calls this); returns its final status."""
    from .engine import train_run

    resume = resumes_from_checkpoint(read_run(run_dir))
    if trains_on_ray_workers(run_dir):
        from .ray_train import train_on_ray

        return train_on_ray(workspace, run_dir, resume)
    return train_run(workspace, run_dir, resume=resume, progress_bar=False, plugins=plugins)
