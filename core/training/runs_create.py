"""The one way a run folder comes into being (API ``POST .../run`` and ``modelyard train`` alike).

Creates ``runs/<run-id>/`` with the frozen ``config.yaml`` first and
``run.json`` (status ``pending``) last, under the project lock: a folder that
has a ``run.json`` always has its config, so a scan never sees half a run.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConflictError, ExperimentNotFoundError
from ..ids import new_id
from ..jsonio import atomic_write_bytes
from ..workspace import Workspace
from .config import ExperimentConfig, dump_yaml, monitor_of
from .run_files import CHECKPOINTS, CONFIG_YAML, new_run_record, runs_dir, write_run

EXPERIMENT_JSON = "experiment.json"


def create_run_folder(workspace: Workspace, project_id: str, experiment_id: str, config: ExperimentConfig) -> Path:
    """Freeze ``config`` into a new pending run of the experiment and return the run folder.

    Refused (``ConflictError``) while the project has no dataset: such a run could only fail.
    """
    with workspace.project_lock(project_id):
        workspace.existing_project_dir(project_id)
        if not workspace.dataset_json(project_id).is_file():
            raise ConflictError("The project has no dataset yet: import images and create a split first",
                                {"project_id": project_id})
        folder = runs_dir(workspace, project_id, experiment_id)
        if not (folder.parent / EXPERIMENT_JSON).is_file():
            raise ExperimentNotFoundError(f"Experiment {experiment_id} not found", {"experiment_id": experiment_id})
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            run_id = new_id("run")
            run_dir = folder / run_id
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
        (run_dir / CHECKPOINTS).mkdir()
        atomic_write_bytes(run_dir / CONFIG_YAML, dump_yaml(config).encode("utf-8"))
        hardware = config.hardware
        record = new_run_record(
            run_id,
            experiment_id,
            project_id,
            devices=list(hardware.devices),
            num_processes=hardware.num_processes if hardware.devices == ["cpu"] else len(hardware.devices),
            total_epochs=config.training.max_epochs,
            monitor=monitor_of(config),
        )
        write_run(workspace, run_dir, record)
    return run_dir
