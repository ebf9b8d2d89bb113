"""The run folder: how it comes into being, and the only channel between the server and a training worker.

``create_run_folder`` is the one way a run folder is made (API ``POST .../run``
and ``modelyard train`` alike): the frozen ``config.yaml`` first and
``run.json`` (status ``pending``) last, under the project lock, so a folder
that has a ``run.json`` always has its config. Every read-modify-write of
``run.json`` or append to ``events.jsonl`` holds the run's lock (thread +
``flock``), so the server and a worker process never lose each other's
update. See ``docs/internals/run-protocol.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import ConflictError, ExperimentNotFoundError, RunNotFoundError
from ..ids import is_valid_id, new_id
from ..jsonio import atomic_write_bytes, read_json
from ..records import Run, RunEarlyStop, RunProgress, read_record
from ..timeutil import utc_now_iso
from ..jobs.events import EVENTS_JSONL, EventLog
from ..jobs.folder import HEARTBEAT, STOP_REQUEST, JobFolder, heartbeat_age_s, touch_heartbeat
from ..jobs.kinds import TRAIN
from ..jobs.process import pid_alive
from ..jobs.status import ACTIVE_STATUSES, JOB_STATUSES, TERMINAL_STATUSES
from ..workspace import Workspace
from .config import ExperimentConfig, dump_yaml, monitor_of

RUN_STATUSES = JOB_STATUSES
RESUMABLE_STATUSES = frozenset({"stopped", "failed", "interrupted"})

HEARTBEAT_INTERVAL_S = 2.0

EXPERIMENT_JSON = "experiment.json"
RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
METRICS_JSON = "metrics.json"
TRAIN_LOG = "train.log"
CHECKPOINTS = "checkpoints"


def describe_early_stop(stopped_early: RunEarlyStop) -> str:
    """One line for logs and the CLI: why a run ended before ``max_epochs`` and where."""
    return (f"early stopping: {stopped_early.monitor} did not improve for {stopped_early.patience} epoch(s); "
            f"stopped after epoch {stopped_early.epoch} of {stopped_early.max_epochs}")


def runs_dir(workspace: Workspace, project_id: str, experiment_id: str) -> Path:
    if not is_valid_id(experiment_id, "exp"):
        raise ExperimentNotFoundError(f"Experiment {experiment_id} not found", {"experiment_id": experiment_id})
    return workspace.experiments_dir(project_id) / experiment_id / "runs"


def find_run_dir(workspace: Workspace, project_id: str, run_id: str) -> Path:
    """The folder of ``run_id`` in any experiment of the project, or ``RunNotFoundError``."""
    if not is_valid_id(run_id, "run"):
        raise RunNotFoundError(f"Run {run_id} not found", {"run_id": run_id})
    experiments = workspace.experiments_dir(project_id)
    for candidate in experiments.glob(f"exp-*/runs/{run_id}"):
        if (candidate / RUN_JSON).is_file():
            return candidate
    raise RunNotFoundError(f"Run {run_id} not found", {"run_id": run_id})


def iter_run_dirs(workspace: Workspace, project_id: str | None = None) -> Iterator[Path]:
    """Every run folder of one project, or of the whole workspace."""
    project_ids = [project_id] if project_id else workspace.project_ids()
    for pid in project_ids:
        for run_json in sorted(workspace.experiments_dir(pid).glob("exp-*/runs/run-*/" + RUN_JSON)):
            yield run_json.parent


def run_job(workspace: Workspace, run_dir: Path) -> JobFolder[Run]:
    """The run folder as the train kind's job folder: ``run.json`` read and written as a ``Run`` under the run's lock."""
    return TRAIN.job(workspace, run_dir)  # type: ignore[return-value]


def read_run(run_dir: Path) -> Run:
    return read_record(run_dir / RUN_JSON, Run)


def update_run(workspace: Workspace, run_dir: Path, change: Callable[[Run], Run]) -> Run:
    """Read ``run.json``, apply ``change`` (which returns the new record) and write it back, under the run lock."""
    return run_job(workspace, run_dir).update(change)


__all__ = ["ACTIVE_STATUSES", "EVENTS_JSONL", "HEARTBEAT", "STOP_REQUEST", "TERMINAL_STATUSES", "EventLog", "heartbeat_age_s",
           "pid_alive", "touch_heartbeat"]  # what the run protocol shares with every job (core.jobs)

#: What a run records about its inputs when training starts (dataset fingerprint, split name and hash, versions).
REPRODUCIBILITY_JSON = "reproducibility.json"
def trained_split_index(run_dir: Path, frozen_index: int, split_names: list[str]) -> int:
    """Where the split this run trained on is now.

    Deleting a split moves every later one down by one, so the frozen
    ``split_index`` can point at other images; the split's name, recorded in
    ``reproducibility.json`` when training started, finds it again. Raises
    ``ConflictError`` when that split has been deleted. Runs that never started
    (no record) keep their frozen index.
    """
    path = run_dir / REPRODUCIBILITY_JSON
    if not path.is_file():
        return frozen_index
    record = read_json(path)
    name = record.get("split_name") if isinstance(record, dict) else None
    if not isinstance(name, str):
        return frozen_index
    if name not in split_names:
        raise ConflictError(
            f"The split '{name}' this run trained on has been deleted",
            {"split_name": name, "split_names": list(split_names)},
        )
    return split_names.index(name)


def create_run_folder(workspace: Workspace, project_id: str, experiment_id: str, config: ExperimentConfig,
                      monitor: str | None = None) -> Path:
    """Freeze ``config`` into a new pending run of the experiment and return the run folder.

    ``monitor`` is what ``best.ckpt`` follows (``monitor_of(config, task)``;
    without it, ``monitor_of(config)``: early stopping's, else ``val/loss``).

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
        record = Run(
            id=run_id,
            experiment_id=experiment_id,
            project_id=project_id,
            status="pending",
            created_at=utc_now_iso(),
            devices=list(hardware.devices),
            num_processes=hardware.num_processes if hardware.devices == ["cpu"] else len(hardware.devices),
            progress=RunProgress(total_epochs=config.training.max_epochs),
            monitor=monitor or monitor_of(config),
        )
        run_job(workspace, run_dir).write(record)
    return run_dir
