"""What a task plugin supplies to training: its targets, how they batch and move with augmentations, its module.

A ``Task`` (``core/plugin_types.py``) is plain metadata; its ``runtime()``
builds one of these where training or evaluation runs (torch is imported
there, never when plugins load). Core's data module, engine and checkpoint
loader talk to a task only through this class, so a task core does not know
(detection, regression, segmentation) trains through the same engine, with the
same resume, DDP sharding, caching and schedules.

A *target* is whatever one image's annotation becomes for the network: a
class id for classification, boxes and labels for detection, a mask for
segmentation (see docs/tasks.md for how masks would flow). Core never looks
inside one: it asks the runtime to store them, take a batch of them, and move
them with a spatial augmentation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..plugin_types import Task
    from .worker.module import TaskModule

#: One labelled image of a subset: its file name in ``images/`` and its target.
Sample = tuple[str, Any]


@dataclass
class EvaluationOutcome:
    """What an evaluation found: the aggregate ``metrics`` (stored in the record) and the per-image results."""

    metrics: dict[str, Any]
    #: written to the evaluation folder; ``save(path)`` and the task's results browsing read it back
    results: Any


class TargetStore(ABC):
    """The targets of one dataset shard, in item order, plus ``pad`` masked items that count in no metric."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def item(self, index: int) -> Any:
        """The target of item ``index`` (a padding item's target for ``index >= real items``)."""

    @abstractmethod
    def batch(self, indices: Sequence[int]) -> Any:
        """The collated targets of these items (the fast path: no per-item work where the task allows)."""

    @abstractmethod
    def collate(self, targets: Sequence[Any]) -> Any:
        """Collate targets that augmentations changed (one per item, in batch order)."""


class TaskRuntime(ABC):
    """A task's behaviour in training, evaluation and export (one instance per process is enough)."""

    def __init__(self, task: Task) -> None:
        self.task = task

    # -- data ---------------------------------------------------------------------
    @abstractmethod
    def check_dataset(self, dataset: dict[str, Any], field: str = "dataset") -> None:
        """Refuse (``ValidationError``) a dataset this task cannot train on, saying why (e.g. fewer than two classes)."""

    @abstractmethod
    def samples(self, dataset: dict[str, Any], split_index: int, subset: str,
                image_size: Sequence[int]) -> list[Sample]:
        """The subset's annotated images and their targets, in ``dataset.json`` order, for images resized to ``image_size``."""

    @abstractmethod
    def target_store(self, targets: Sequence[Any], pad: int = 0) -> TargetStore:
        """Hold a shard's targets (and ``pad`` padding items)."""

    def augment(self, transform: Callable[..., Any], image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        """Apply a (seeded) augmentation to one image; a task whose targets are spatial moves them too."""
        return transform(image), target

    # -- model ---------------------------------------------------------------------
    @abstractmethod
    def module_class(self) -> type[TaskModule]:
        """The LightningModule class (also what a checkpoint of this task is loaded into)."""

    def module_options(self, config: Any, classes: list[str], train_targets: Sequence[Any]) -> dict[str, Any]:
        """Extra plain-data hyperparameters of a new module, computed from the training targets (e.g. class weights)."""
        return {}

    def build_module(self, net: nn.Module, *, classes: list[str], config: dict[str, Any], mean: list[float],
                     std: list[float], options: dict[str, Any]) -> TaskModule:
        """The task's LightningModule around ``net`` (the same call rebuilds one from a checkpoint)."""
        return self.module_class()(net, num_classes=len(classes), class_names=list(classes), config=config,
                                   mean=mean, std=std, **options)

    # -- evaluation (core/evaluation/worker.py) ------------------------------------------
    def evaluation_samples(self, dataset: dict[str, Any], split_index: int, subset: str, image_size: Sequence[int],
                           model_classes: list[str]) -> tuple[list[Sample], int]:
        """The subset's images to evaluate with targets in the *model's* class ids, and how many were skipped.

        The dataset may have gained classes since the run trained; the default
        maps targets by class name through ``samples`` and is right for tasks
        whose targets are not class ids.
        """
        return self.samples(dataset, split_index, subset, image_size), 0

    def evaluate(self, outputs: list[Any], targets: list[Any], classes: list[str], options: dict[str, Any]) -> EvaluationOutcome:
        """Aggregate metrics and per-image results from ``predict_step`` outputs (one per image, in item order)."""
        from ..errors import ValidationError

        raise ValidationError(f"task '{self.task.id}' cannot be evaluated (its runtime has no evaluation)", field="task")

    # -- export (core/export/worker.py) ----------------------------------------------------


def runtime_of(task: Task) -> TaskRuntime:
    """The task's runtime; ``ValidationError`` for a task registered without one (it cannot train)."""
    from ..errors import ValidationError

    if task.runtime is None:
        raise ValidationError(f"task '{task.id}' has no training runtime (its plugin registers none)", field="task")
    runtime = task.runtime()
    if not isinstance(runtime, TaskRuntime):
        raise ValidationError(f"task '{task.id}': its runtime() returned {type(runtime).__name__}, not a TaskRuntime",
                              field="task")
    return runtime
