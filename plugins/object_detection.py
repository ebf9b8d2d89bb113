"""The ``object_detection`` task: zero or more labelled boxes per image (DESIGN section 10)."""

from __future__ import annotations

from modelyard.core import Task, TaskRegistry, hookimpl

OBJECT_DETECTION = Task(
    id="object_detection",
    name="Object detection",
    description="Boxes around the objects in an image, each with a class; a model answers with scored boxes.",
    annotation_types=("bbox",),
)


@hookimpl
def register_tasks(registry: TaskRegistry) -> None:
    registry.add(OBJECT_DETECTION)
