"""The ``classification`` task: one class label per image (the task every project had before tasks were plugins)."""

from __future__ import annotations

from typing import Any

from modelyard.core import Loss, LossRegistry, Metric, MetricRegistry, Task, TaskRegistry, TrainingContext, hookimpl
from modelyard.core.evaluation.results import ResultsTable


def _runtime():  # type: ignore[no-untyped-def]
    from .runtime import ClassificationRuntime  # torch: only where training or evaluation runs

    return ClassificationRuntime(CLASSIFICATION)


CLASSIFICATION = Task(
    id="classification",
    name="Image classification",
    description="One class per image; a model answers with a probability for every class.",
    annotation_types=("label",),
    metrics={"train/loss": "min", "train/acc": "max", "val/loss": "min", "val/acc": "max", "val/f1": "max"},
    monitor="val/loss",
    default_architecture="resnet18",
    runtime=_runtime,
    load_results=ResultsTable.load,
)


@hookimpl
def register_tasks(registry: TaskRegistry) -> None:
    registry.add(CLASSIFICATION)


# -- losses and metrics a config may name (hook API 0.3) ------------------------------------------------------------


def _class_weight(context: TrainingContext) -> Any:
    import torch

    return torch.tensor(context.class_weights, dtype=torch.float32) if context.class_weights else None


def _label_smoothing(context: TrainingContext) -> float:
    return float(((context.config.get("training") or {}).get("loss") or {}).get("label_smoothing", 0.0))


def build_cross_entropy(options: dict[str, Any], context: TrainingContext) -> Any:
    """``torch.nn.CrossEntropyLoss`` with the config's ``label_smoothing`` and ``class_weights``."""
    from torch import nn

    return nn.CrossEntropyLoss(weight=_class_weight(context), label_smoothing=_label_smoothing(context))


def build_focal(options: dict[str, Any], context: TrainingContext) -> Any:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_true) ** gamma``, so easy images count less."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class FocalLoss(nn.Module):
        def __init__(self, gamma: float, weight: torch.Tensor | None) -> None:
            super().__init__()
            self.gamma = gamma
            self.register_buffer("weight", weight, persistent=False)

        def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
            losses = -((1.0 - log_p.exp()) ** self.gamma) * log_p
            if self.weight is None:
                return losses.mean()
            weights = self.weight[labels]  # like CrossEntropyLoss(weight=...): a weighted mean
            return (losses * weights).sum() / weights.sum().clamp_min(1e-12)

    return FocalLoss(float(options["gamma"]), _class_weight(context))


CROSS_ENTROPY = Loss(
    name="cross_entropy",
    build=build_cross_entropy,
    description="Cross-entropy with training.loss.label_smoothing and class_weights (the default).",
)
FOCAL = Loss(
    name="focal",
    build=build_focal,
    options_schema={"type": "object", "properties": {"gamma": {"type": "number", "minimum": 0, "maximum": 10, "default": 2.0}}},
    description="Focal loss: down-weights images the model already gets right (class_weights apply; label_smoothing does not).",
)

_AVERAGE = {"type": "object", "properties": {"average": {"enum": ["macro", "weighted"], "default": "macro"}}}


def build_precision(options: dict[str, Any], context: TrainingContext) -> Any:
    from torchmetrics.classification import MulticlassPrecision

    return MulticlassPrecision(context.num_classes, average=options["average"], validate_args=False)


def build_recall(options: dict[str, Any], context: TrainingContext) -> Any:
    from torchmetrics.classification import MulticlassRecall

    return MulticlassRecall(context.num_classes, average=options["average"], validate_args=False)


PRECISION = Metric(name="precision", build=build_precision, options_schema=_AVERAGE,
                   description="Precision over the validation images (macro or weighted average over classes).")
RECALL = Metric(name="recall", build=build_recall, options_schema=_AVERAGE,
                description="Recall over the validation images (macro: the balanced accuracy).")


@hookimpl
def register_losses(registry: LossRegistry) -> None:
    registry.add(CROSS_ENTROPY)
    registry.add(FOCAL)


@hookimpl
def register_metrics(registry: MetricRegistry) -> None:
    registry.add(PRECISION)
    registry.add(RECALL)
