"""Training as a job kind: the worker function the job layer calls for a claimed run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...records import Run
from ...workspace import Workspace
from ..run_folder import read_run

if TYPE_CHECKING:
    from ...plugin_manager import PluginHost


def resumes_from_checkpoint(record: Run) -> bool:
    """Whether the run's latest queueing was a resume that continues from a checkpoint."""
    return bool(record.resumes) and record.resumes[-1].checkpoint is not None


def run_training_job(workspace: Workspace, run_dir: Path, plugins: PluginHost) -> str:
    """Train the run in ``run_dir`` (every DDP rank calls this); returns its final status."""
    from .engine import train_run

    resume = resumes_from_checkpoint(read_run(run_dir))
    return train_run(workspace, run_dir, resume=resume, progress_bar=False, plugins=plugins)
