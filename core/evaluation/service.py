"""Evaluations on the server side: create (validate and queue), list, read, delete, page results.

The service never runs a model: ``create`` checks everything a request can
get wrong (project, experiment, run, checkpoint, split, subset, devices), writes
``evaluations/<eval-id>/evaluation.json`` as ``pending`` and starts the worker
(``core/evaluation/worker.py``). Reads notice a worker that died and mark its
evaluation ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..datasets.store import DatasetStore
from ..datasets.view import DatasetView
from ..devices import known_device_ids
from ..errors import ConflictError, EvaluationNotFoundError, SplitNotFoundError, ValidationError
from ..jobs.kinds import EVALUATE
from ..jobs.queue import JobQueue
from ..jobs.store import JobStore
from ..records import Evaluation
from ..training.checkpoints import existing_checkpoint, find_run, frozen_config
from ..training.run_folder import trained_split_index
from ..projects import read_project
from ..registry import TaskRegistry
from ..workspace import Workspace
from .index import ResultsIndexCache, ResultsQuery
from .results import RESULTS_FILE

log = logging.getLogger(__name__)

SUBSETS: tuple[str, ...] = ("train", "val", "test")


def subsets_of(split_subset: str | list[str]) -> list[str]:
    """The subset names of a request (one name or a list), validated, without duplicates."""
    names = [split_subset] if isinstance(split_subset, str) else list(split_subset)
    if not names:
        raise ValidationError("split_subset must name at least one subset", field="split_subset")
    for name in names:
        if name not in SUBSETS:
            raise ValidationError(f"split_subset: unknown subset '{name}' (use {', '.join(SUBSETS)})", field="split_subset")
    if len(set(names)) != len(names):
        raise ValidationError("split_subset names a subset twice", field="split_subset")
    return names


def read_dataset(store: DatasetStore, project_id: str) -> DatasetView:
    """The project's dataset as its shared index serves it (``SplitNotFoundError`` before the first import)."""
    if not store.workspace.dataset_json(project_id).is_file():
        raise SplitNotFoundError(f"Project {project_id} has no dataset, so it has no splits", {"project_id": project_id})
    return DatasetView(store.index(project_id))


def check_split(dataset: Mapping[str, Any], split_index: int) -> str:
    """The split's name, or ``SplitNotFoundError`` listing the splits there are."""
    names = dataset.get("split_names") or []
    if not 0 <= split_index < len(names):
        raise SplitNotFoundError(
            f"Split {split_index} not found (the dataset has {len(names)} split(s))",
            {"split_index": split_index, "split_names": list(names)},
        )
    return str(names[split_index])


def check_devices(devices: list[str] | None, num_processes: int = 1) -> list[str]:
    """Ids from ``/api/system/devices``: ``cpu`` (when omitted too), or GPUs (several: DDP, one process each).

    ``num_processes`` > 1 runs a CPU evaluation as DDP over that many processes.
    """
    devices = list(devices or ["cpu"])
    known = known_device_ids()
    for device in devices:
        if device not in known:
            raise ValidationError(f"devices: unknown device '{device}'", field="devices",
                                  details={"available": sorted(known)})
    if len(set(devices)) != len(devices):
        raise ValidationError("devices must not repeat", field="devices")
    if "cpu" in devices and len(devices) > 1:
        raise ValidationError("evaluate on the CPU or on GPUs, not both", field="devices")
    if not 1 <= num_processes <= 64:
        raise ValidationError("num_processes must be between 1 and 64", field="num_processes")
    if num_processes > 1 and devices != ["cpu"]:
        raise ValidationError("num_processes applies to CPU evaluation; for GPUs list the devices instead",
                              field="num_processes")
    return devices


def subset_size(dataset: DatasetView, split_index: int, subset: str, annotation_types: tuple[str, ...]) -> int:
    """How many images ``subset`` holds with an annotation the project's task reads (from the index's columns)."""
    import numpy as np

    positions = dataset.subset_positions(split_index, subset)
    annotated = np.zeros(len(positions), dtype=bool)
    for kind in annotation_types:
        annotated[dataset.annotations(positions, kind).owner] = True
    return int(annotated.sum())


class EvaluationService:
    """Evaluation records of every project (see the module docstring)."""

    def __init__(self, workspace: Workspace, queue: JobQueue, tasks: TaskRegistry, store: DatasetStore | None = None) -> None:
        self.workspace = workspace
        self.queue = queue
        self.tasks = tasks
        #: the server's shared dataset store (one index per dataset version); its own when none is given
        self.store = store if store is not None else DatasetStore(workspace)
        self.indexes = ResultsIndexCache()
        self.jobs: JobStore[Evaluation] = JobStore(workspace, queue, EVALUATE, workspace.evaluations_dir, lambda eval_id: EvaluationNotFoundError(
            f"Evaluation {eval_id} not found", {"evaluation_id": eval_id}))

    # -- create ------------------------------------------------------------------
    def create(
        self,
        project_id: str,
        *,
        experiment_id: str,
        run_id: str,
        checkpoint: str = "best",
        split_index: int | None = None,
        split_subset: str | list[str] = "test",
        batch_size: int = 32,
        devices: list[str] | None = None,
        num_processes: int = 1,
        score_threshold: float | None = None,
    ) -> Evaluation:
        """Validate the request, write a ``pending`` evaluation and start its worker."""
        ref = find_run(self.workspace, project_id, experiment_id, run_id)
        existing_checkpoint(ref, checkpoint)
        subsets = subsets_of(split_subset)
        dataset = read_dataset(self.store, project_id)
        if split_index is None:  # the split the run trained on, found by name if an earlier split was deleted since
            names = [str(n) for n in dataset.get("split_names") or []]
            split_index = trained_split_index(ref.run_dir, frozen_config(ref).split_index, names)
        split_name = check_split(dataset, split_index)
        task = self.tasks.get(read_project(self.workspace, project_id).task, field="task")
        total = sum(subset_size(dataset, split_index, subset, task.annotation_types) for subset in subsets)
        if total == 0:
            raise ConflictError(  # the request is well formed; the dataset's state refuses it
                f"split '{split_name}' has no labelled images in {' + '.join(subsets)}",
                {"field": "split_subset", "split_index": split_index, "split_subset": split_subset},
            )
        if not 1 <= batch_size <= 4096:
            raise ValidationError("batch_size must be between 1 and 4096", field="batch_size")
        devices = check_devices(devices, num_processes)
        if score_threshold is not None and not 0.0 <= score_threshold <= 1.0:
            raise ValidationError("score_threshold must be between 0 and 1", field="score_threshold")
        return self.jobs.submit(project_id, {
            "experiment_id": experiment_id,
            "run_id": run_id,
            "checkpoint": checkpoint,
            "split_index": split_index,
            "split_name": split_name,
            "split_subset": split_subset,
            "batch_size": batch_size,
            "devices": devices,
            "num_processes": num_processes,
            "score_threshold": score_threshold,
            "progress": {"done": 0, "total": total},
        })

    # -- read ----------------------------------------------------------------------
    def get(self, project_id: str, eval_id: str) -> Evaluation:
        return self.jobs.get(project_id, eval_id)

    def list(self, project_id: str) -> list[Evaluation]:
        return self.jobs.list(project_id)

    def results(self, project_id: str, eval_id: str, query: ResultsQuery) -> tuple[list[dict[str, Any]], int]:
        """One page of per-image results of a completed evaluation, and the filtered total."""
        folder = self.jobs.folder(project_id, eval_id)
        record = self.get(project_id, eval_id)
        if record.status != "completed":
            raise ConflictError(
                f"Evaluation {eval_id} is {record.status}; per-image results exist once it has completed",
                {"status": record.status},
            )
        task = self.tasks.get(read_project(self.workspace, project_id).task, field="task")
        if task.load_results is None:
            raise ConflictError(f"task '{task.id}' keeps no per-image results", {"task": task.id})
        return self.indexes.get(folder / RESULTS_FILE, task.load_results).query(query)

    # -- delete ------------------------------------------------------------------
    def delete(self, project_id: str, eval_id: str) -> None:
        """Stop the worker if it still runs, then remove the evaluation folder."""
        self.indexes.forget(self.jobs.delete(project_id, eval_id))
