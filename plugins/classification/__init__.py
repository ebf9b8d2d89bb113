"""The ``classification`` task: one class label per image (the task every project had before tasks were plugins)."""

from __future__ import annotations

from modelyard.core import Task, TaskRegistry, hookimpl
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
