"""The ``classification`` task: one class label per image (the task every project had before tasks were plugins)."""

from __future__ import annotations

from modelyard.core import Task, TaskRegistry, hookimpl

CLASSIFICATION = Task(
    id="classification",
    name="Image classification",
    description="One class per image; a model answers with a probability for every class.",
    annotation_types=("label",),
)


@hookimpl
def register_tasks(registry: TaskRegistry) -> None:
    registry.add(CLASSIFICATION)
