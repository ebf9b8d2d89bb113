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

A runtime never sees the parsed ``dataset.json``: it gets a read-only mapping
view of the dataset's columnar index (``DatasetView``), with the document's
keys and its images made dicts only as they are read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..datasets.view import DatasetView
    from ..plugin_types import Task, VerificationPolicy
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


class TensorStore(TargetStore):
    """Targets of one fixed shape each (a class id, a number, a mask) stacked in one tensor.

    A batch is a single ``index_select``; padding items hold ``pad_value``
    (e.g. classification's label ``-1`` or a regression's NaN), which the
    task's metrics skip.
    """

    def __init__(self, values: torch.Tensor, pad: int = 0, pad_value: float = 0) -> None:
        import torch

        padding = torch.full((pad, *values.shape[1:]), pad_value, dtype=values.dtype)
        self.values = torch.cat([values, padding]) if pad else values

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def item(self, index: int) -> torch.Tensor:
        return self.values[index]

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        import torch

        return self.values.index_select(0, torch.as_tensor(indices, dtype=torch.int64))

    def collate(self, targets: Sequence[Any]) -> torch.Tensor:
        import torch

        return torch.stack(list(targets))


class TaskRuntime(ABC):
    """A task's behaviour in training, evaluation and export (one instance per process is enough)."""

    #: whether each prediction has a class score Grad-CAM can explain (``?explain=gradcam``, core/prediction)
    explainable: bool = False

    def __init__(self, task: Task) -> None:
        self.task = task

    # -- data ---------------------------------------------------------------------
    # ``dataset`` is a read-only mapping with dataset.json's keys (``version``, ``task``, ``classes``,
    # ``split_names``, ``image_stats``, ``images``...) whose ``images`` are made plain dicts one at a time,
    # when read: a million-image document is never parsed whole. Core passes a ``DatasetView``
    # (``core/datasets/view.py``), whose methods also read the columns of many images at once.

    @abstractmethod
    def check_dataset(self, dataset: Mapping[str, Any], field: str = "dataset") -> None:
        """Refuse (``ValidationError``) a dataset this task cannot train on, saying why (e.g. fewer than two classes).

        ``dataset``: the read-only mapping described above (``images`` materialised lazily).
        """

    @abstractmethod
    def samples(self, dataset: Mapping[str, Any], split_index: int, subset: str,
                image_size: Sequence[int]) -> list[Sample]:
        """The subset's annotated images and their targets, in ``dataset.json`` order, for images resized to ``image_size``.

        ``dataset``: the read-only mapping described above (``images`` materialised lazily).
        """

    @staticmethod
    def dataset_view(dataset: Mapping[str, Any]) -> DatasetView:
        """``dataset`` as a ``DatasetView`` for column reads: itself when core passed one, else that plain document's.

        A runtime that reads many images at once uses it (the built-in ones do);
        the view's ``subset_positions``, ``filenames``, ``image_sizes`` and
        ``annotations`` answer for a whole subset in a few numpy operations.
        """
        from ..datasets.view import as_view

        return as_view(dataset)

    @abstractmethod
    def target_store(self, targets: Sequence[Any], pad: int = 0) -> TargetStore:
        """Hold a shard's targets (and ``pad`` padding items)."""

    def augment(self, transform: Callable[..., Any], image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        """Apply a (seeded) augmentation to one image; a task whose targets are spatial moves them too."""
        return transform(image), target

    def flip_targets(self, targets: list[Any], flips: Sequence[tuple[int, torch.Tensor]],
                     image_size: Sequence[int]) -> list[Any] | None:
        """The batched twin of ``augment`` for a flip-only pipeline: a batch's targets after its flips.

        ``flips`` are the pipeline's steps in order: the image axis (``-1``
        left-right, ``-2`` top-bottom) and a bool per image that says whether
        it was flipped. The result must equal what ``augment`` gives image by
        image. The default ``None`` says the task cannot, and its images go
        through ``augment`` one by one.
        """
        return None

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
    def evaluation_samples(self, dataset: Mapping[str, Any], split_index: int, subset: str, image_size: Sequence[int],
                           model_classes: list[str]) -> tuple[list[Sample], int]:
        """The subset's images to evaluate with targets in the *model's* class ids, and how many were skipped.

        ``dataset`` is the read-only mapping ``samples`` takes (``images`` materialised lazily).
        The dataset may have gained classes since the run trained; the default
        maps targets by class name through ``samples`` and is right for tasks
        whose targets are not class ids.
        """
        return self.samples(dataset, split_index, subset, image_size), 0

    def evaluate(self, items: list[tuple[str, str, Any]], outputs: list[Any], classes: list[str],
                 options: dict[str, Any]) -> EvaluationOutcome:
        """Aggregate metrics and per-image results.

        ``items`` are ``(filename, subset, target)`` and ``outputs`` the module's
        ``evaluate_batch`` output for each, in the same order.
        """
        from ..errors import ValidationError

        raise ValidationError(f"task '{self.task.id}' cannot be evaluated (its runtime has no evaluation)", field="task")

    # -- prediction (DESIGN section 12) ----------------------------------------------------
    def predictions(self, output: Any, classes: list[str], source_size: tuple[int, int],
                    options: dict[str, Any]) -> list[dict[str, Any]]:
        """One image's answer to a predict request from its ``evaluate_batch`` output.

        ``source_size`` is the image's ``(width, height)`` as sent (spatial
        answers are in its pixels); ``options`` carries the request's
        ``top_k``/``score_threshold``.
        """
        from ..errors import ValidationError

        raise ValidationError(f"task '{self.task.id}' cannot predict (its runtime has no prediction output)", field="task")

    def prediction_outputs(self, exported: Any) -> list[Any]:
        """An export's answers (``exported_outputs``) as per-image outputs of the form ``predictions`` reads.

        The default is classification's: each row of logits becomes its
        softmax probabilities (``evaluate_batch``'s form; no loss without a label).
        """
        import numpy as np

        logits = np.asarray(exported, dtype=np.float64)
        logits = logits - logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return [(row.astype(np.float32), float("nan")) for row in probabilities]

    # -- export (core/export/worker.py) ----------------------------------------------------
    # The exported graph takes what the network takes (normalised float NCHW, the run's image size) and
    # answers with the named outputs of ``export_outputs``. Every default below is classification's: one
    # ``output`` of logits, a dynamic batch, verified by top-1 agreement and a logit tolerance
    # (``core/export/verify.py``). A task with another output overrides them (detection:
    # ``plugins/object_detection/export.py``).

    def export_options_schema(self) -> dict[str, Any]:
        """The task's own export options: JSON-schema properties, each with a ``default``.

        An export request's ``options`` may hold them beside the format's own
        (checked the same way, 422 naming ``options.<name>``); the record keeps
        them, the exporter plugin never sees them.
        """
        return {}

    def check_export_options(self, options: dict[str, Any], format_defaults: dict[str, Any]) -> None:
        """Refuse (``ValidationError`` naming ``options.<name>``) resolved options the task's graph cannot honour.

        ``format_defaults`` are the format's own defaults, so a task can tell an
        option the user set from one the schema filled in.
        """

    def export_outputs(self) -> dict[str, dict[int, str]]:
        """The graph's output names in order, each with its dynamic axes (axis index -> symbolic name)."""
        return {"output": {0: "batch_size"}}

    def export_input_axes(self) -> dict[int, str]:
        """The dynamic axes of the graph's one input ``input`` (``{}``: a fixed shape)."""
        return {0: "batch_size"}

    def export_metadata(self, options: dict[str, Any]) -> dict[str, Any]:
        """Task facts stored in the file beside classes and preprocessing (``modelyard.<key>``; JSON scalars)."""
        return {}

    def export_module(self, net: nn.Module, options: dict[str, Any]) -> nn.Module:
        """What the exporter traces: normalised float NCHW in, the outputs of ``export_outputs`` out (eval mode)."""
        return net

    def reference_outputs(self, net: nn.Module, batch: torch.Tensor) -> Any:
        """PyTorch's answer on the verification batch, as ``compare_exported`` takes it (under ``no_grad``)."""
        return net(batch).float().cpu().numpy()

    def exported_outputs(self, predict: Callable[[Any], Any], batch: Any, chunk: int) -> Any:
        """The exported file's answer on the same batch (numpy), through the exporter's ``predict``.

        ``chunk`` is the batch size the file was exported with.
        """
        from ..export.verify import predict_in_chunks

        return predict_in_chunks(predict, batch, chunk)

    def compare_exported(self, reference: Any, exported: Any, options: dict[str, Any],
                         policy: VerificationPolicy | None = None) -> dict[str, Any]:
        """The export record's ``verification`` (``core.records.Verification`` fields; ``passed`` decides).

        ``policy`` is the exporter's ``VerificationPolicy`` (or modelyard's
        default for it), which the comparison applies: its tolerances relative
        to the output scale, the task's agreement minimum, ``lossy``. Core
        passes it only to an override whose signature names ``policy`` (added
        in 0.3); one without it compares by its own rules, and the record says
        so (``verification.policy.source: task``).
        """
        from ..export.verify import compare_outputs

        return compare_outputs(reference, exported, half=options.get("fp16") is True, policy=policy)

    def verification_summary(self, verification: dict[str, Any]) -> str:
        """What the comparison found, in words: a failed export's error message and the bundle README's line."""
        return (f"top-1 agreement {verification['top1_agreement']:.4f}, max abs diff {verification['max_abs_diff']} "
                f"(tolerance {verification['tolerance']:.3g})")

    def export_usage(self) -> dict[str, str] | None:
        """How the bundle README reads the outputs; ``None``: classification's logits snippet.

        Otherwise ``{"imports": ..., "code": ..., "output": ...}``: extra import
        lines, Python lines that use ``outputs`` (the list of numpy arrays the
        file returns for the one image ``x``), ``labels`` (class names) and the
        image file ``image.jpg``, and one sentence for ``preprocessing.json``
        saying what the outputs are.
        """
        return None


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
