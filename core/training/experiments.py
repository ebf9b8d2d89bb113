"""Experiments: named, editable configs (``experiments/<exp-id>/experiment.json``).

An experiment stores its *resolved* config (every default filled in), so a
``GET`` shows exactly what a run would train. A ``PATCH`` deep-merges onto it
and is allowed at any time: runs keep their frozen ``config.yaml``. Deleting an
experiment removes its runs and is refused while one of them is pending or
running.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from ..datasets.store import DatasetStore
from ..datasets.view import DatasetView
from ..errors import ConflictError, ExperimentNotFoundError, ModelyardError
from ..ids import is_valid_id, new_id
from ..jsonio import atomic_write_json, read_json
from ..plugin_manager import PluginHost
from ..plugin_types import Task
from ..projects import validate_description, validate_name
from ..settings import Settings
from ..timeutil import utc_now_iso
from ..workspace import Workspace
from .config import ExperimentConfig, config_to_dict, resolve_config
from ..projects import read_project
from ..records import Run
from .run_folder import ACTIVE_STATUSES, EXPERIMENT_JSON, RUN_JSON, read_run

log = logging.getLogger(__name__)


class ExperimentService:
    def __init__(self, workspace: Workspace, plugins: PluginHost, settings: Settings | None = None,
                 store: DatasetStore | None = None) -> None:
        self.workspace = workspace
        self.plugins = plugins
        self.settings = settings
        #: the server's shared dataset store (one index per dataset version); its own when none is given
        self.store = store if store is not None else DatasetStore(workspace)

    # -- paths and validation -----------------------------------------------------
    def experiment_dir(self, project_id: str, experiment_id: str) -> Path:
        """Folder of an existing experiment of an existing project (404 otherwise)."""
        self.workspace.existing_project_dir(project_id)
        if not is_valid_id(experiment_id, "exp"):
            raise _not_found(experiment_id)
        folder = self.workspace.experiments_dir(project_id) / experiment_id
        if not (folder / EXPERIMENT_JSON).is_file():
            raise _not_found(experiment_id)
        return folder

    def _dataset(self, project_id: str) -> DatasetView | None:
        """The project's dataset as its index serves it (a config reads its ``split_names``); ``None`` before an import."""
        if not self.workspace.dataset_json(project_id).is_file():
            return None
        return DatasetView(self.store.index(project_id))

    def task_of(self, project_id: str) -> Task:
        """The registered task of the project (its config defaults, monitors and architectures follow it)."""
        return self.plugins.tasks.get(read_project(self.workspace, project_id).task, field="task")

    def _weight_roots(self) -> list[Path]:
        roots = [self.workspace.root]
        if self.settings is not None:
            roots += list(self.settings.import_roots)
        return roots

    def resolve(self, project_id: str, partial: dict[str, Any] | None, base: dict[str, Any] | None = None) -> ExperimentConfig:
        """Validate ``partial`` (merged onto ``base`` or the task defaults) against this project and machine."""
        from ..devices import known_device_ids

        return resolve_config(
            partial,
            self.plugins.architectures,
            self._dataset(project_id),
            base=base,
            task=self.task_of(project_id),
            devices=sorted(known_device_ids()),
            weight_roots=self._weight_roots(),
            plugins=self.plugins,
        )

    # -- CRUD ----------------------------------------------------------------------
    def create(self, project_id: str, name: str, description: str = "", config: dict[str, Any] | None = None) -> dict[str, Any]:
        name = validate_name(name)
        description = validate_description(description)
        with self.workspace.project_lock(project_id):
            self.workspace.existing_project_dir(project_id)
            resolved = self.resolve(project_id, config)
            self._ensure_unique_name(project_id, name)
            folder = self.workspace.experiments_dir(project_id)
            folder.mkdir(parents=True, exist_ok=True)
            while True:
                experiment_id = new_id("exp")
                try:
                    (folder / experiment_id).mkdir()
                    break
                except FileExistsError:
                    continue
            now = utc_now_iso()
            experiment = {
                "id": experiment_id,
                "name": name,
                "description": description,
                "config": config_to_dict(resolved),
                "created_at": now,
                "updated_at": now,
                # orders experiments created within the same second (created_at has 1 s precision)
                "created_ns": time.time_ns(),
            }
            atomic_write_json(folder / experiment_id / EXPERIMENT_JSON, experiment)
        return self._with_runs(project_id, experiment)

    def list(self, project_id: str) -> list[dict[str, Any]]:
        """Every experiment with its run count, latest run and best metric, oldest first."""
        self.workspace.existing_project_dir(project_id)
        folder = self.workspace.experiments_dir(project_id)
        experiments = []
        for path in sorted(folder.glob("exp-*/" + EXPERIMENT_JSON)) if folder.is_dir() else []:
            if not is_valid_id(path.parent.name, "exp"):
                continue
            try:
                experiments.append(self._with_runs(project_id, read_json(path), summary=True))
            except ModelyardError as exc:  # one broken file must not hide the others
                log.warning("skipping experiment %s in listing: %s", path.parent.name, exc)
        return sorted(experiments, key=lambda e: (e.get("created_at", ""), e.get("created_ns", 0), e["id"]))

    def follow_split_removal(self, project_id: str, removed_index: int) -> list[str]:
        """Split ``removed_index`` was deleted and later splits moved down: experiments on them move down too.

        They keep training on the same images. Experiments on the deleted split
        itself are left as they are (there is no split to point them at).
        Returns the ids of the experiments changed; holds the project lock.
        """
        changed = []
        with self.workspace.project_lock(project_id):
            folder = self.workspace.experiments_dir(project_id)
            for path in sorted(folder.glob("exp-*/" + EXPERIMENT_JSON)) if folder.is_dir() else []:
                if not is_valid_id(path.parent.name, "exp"):
                    continue
                try:
                    experiment = read_json(path)
                    index = int(experiment["config"]["split_index"])
                except (ModelyardError, KeyError, TypeError, ValueError) as exc:
                    log.warning("experiment %s not updated after a split deletion: %s", path.parent.name, exc)
                    continue
                if index > removed_index:
                    experiment["config"]["split_index"] = index - 1
                    experiment["updated_at"] = utc_now_iso()
                    atomic_write_json(path, experiment)
                    changed.append(path.parent.name)
        return changed

    def get(self, project_id: str, experiment_id: str) -> dict[str, Any]:
        folder = self.experiment_dir(project_id, experiment_id)
        return self._with_runs(project_id, read_json(folder / EXPERIMENT_JSON))

    def find_by_name(self, project_id: str, name: str) -> dict[str, Any] | None:
        for experiment in self.list(project_id):
            if experiment["name"] == name:
                return experiment
        return None

    def update(self, project_id: str, experiment_id: str, changes: dict[str, Any], replace_config: bool = False) -> dict[str, Any]:
        """Apply ``name``/``description``/``config`` changes; ``config`` deep-merges (or replaces) and is re-validated."""
        with self.workspace.project_lock(project_id):
            folder = self.experiment_dir(project_id, experiment_id)
            experiment = read_json(folder / EXPERIMENT_JSON)
            if "name" in changes:
                name = validate_name(changes["name"])
                if name != experiment["name"]:
                    self._ensure_unique_name(project_id, name)
                experiment["name"] = name
            if "description" in changes:
                experiment["description"] = validate_description(changes["description"])
            if "config" in changes:
                base = None if replace_config else experiment["config"]
                experiment["config"] = config_to_dict(self.resolve(project_id, changes["config"], base=base))
            experiment["updated_at"] = utc_now_iso()
            atomic_write_json(folder / EXPERIMENT_JSON, experiment)
        return self._with_runs(project_id, experiment)

    def delete(self, project_id: str, experiment_id: str) -> None:
        """Remove the experiment and its runs; 409 while one of its runs is pending or running."""
        with self.workspace.project_lock(project_id):
            folder = self.experiment_dir(project_id, experiment_id)
            active = [r.id for r in self._runs(folder) if r.status in ACTIVE_STATUSES]
            if active:
                raise ConflictError(
                    f"Cannot delete experiment {experiment_id} while a run is pending or running: {', '.join(active)}",
                    {"active_runs": active},
                )
            trash = self.workspace.new_staging_dir(f"delete-{experiment_id}")
            folder.rename(trash / experiment_id)  # atomic: a crash never leaves a half experiment that lists
        shutil.rmtree(trash, ignore_errors=True)

    def run_config(self, project_id: str, experiment_id: str) -> ExperimentConfig:
        """The experiment's config re-validated now (dataset, registry and devices may have changed since it was saved)."""
        folder = self.experiment_dir(project_id, experiment_id)
        experiment = read_json(folder / EXPERIMENT_JSON)
        return self.resolve(project_id, {}, base=experiment["config"])

    # -- internals ------------------------------------------------------------------
    def _ensure_unique_name(self, project_id: str, name: str) -> None:
        folder = self.workspace.experiments_dir(project_id)
        for path in folder.glob("exp-*/" + EXPERIMENT_JSON) if folder.is_dir() else []:
            try:
                existing = read_json(path).get("name")
            except (ModelyardError, OSError, AttributeError):
                continue
            if existing == name:
                raise ConflictError(f"An experiment named '{name}' already exists", {"name": name, "id": path.parent.name})

    @staticmethod
    def _runs(folder: Path) -> list[Run]:
        runs = []
        for run_json in (folder / "runs").glob("run-*/" + RUN_JSON):
            with contextlib.suppress(ModelyardError, OSError):
                runs.append(read_run(run_json.parent))
        return sorted(runs, key=lambda r: (r.created_at, r.id))

    def _with_runs(self, project_id: str, experiment: dict[str, Any], summary: bool = False) -> dict[str, Any]:
        folder = self.workspace.experiments_dir(project_id) / experiment["id"]
        runs = self._runs(folder)
        latest = runs[-1] if runs else None
        result = {
            **experiment,
            "run_count": len(runs),
            "latest_run": _run_summary(latest) if latest else None,
            "best_metric": _best_metric(runs, self.task_of(project_id)) if runs else None,
        }
        if summary:
            result.pop("config", None)
        else:
            result["runs"] = [_run_summary(r) for r in reversed(runs)]
        return result


def _not_found(experiment_id: str) -> ExperimentNotFoundError:
    return ExperimentNotFoundError(f"Experiment {experiment_id} not found", {"experiment_id": experiment_id})


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "monitor": run.monitor,
        "best_metrics": run.best_metrics,
        "best_epoch": run.best_epoch,
    }


def _best_metric(runs: list[Run], task: Task) -> dict[str, Any] | None:
    """The best value of the latest run's monitored metric over the runs that monitor it."""
    if not runs:
        return None
    monitor = runs[-1].monitor
    candidates = []
    for run in runs:
        value = run.best_metrics.get(monitor)
        if run.monitor == monitor and isinstance(value, int | float):
            candidates.append((float(value), run))
    if not candidates:
        return None
    pick = min if task.monitor_mode(monitor) == "min" else max
    value, run = pick(candidates, key=lambda c: c[0])
    return {"name": monitor, "value": value, "run_id": run.id, "epoch": run.best_epoch}
