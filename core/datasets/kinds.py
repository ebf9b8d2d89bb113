"""What a project's task makes of its dataset: whether its annotations are boxes.

Core never compares task ids; it asks the registered ``Task`` which
annotation types it reads. A task that reads ``bbox`` annotations holds
multi-label data: every image is annotated (an image without boxes is a
background image, not an unlabelled one), class counts count boxes, and
splits stratify by the set of classes in each image.
"""

from __future__ import annotations

from ..registry import TaskRegistry

BOX_ANNOTATION = "bbox"


def annotates_boxes(tasks: TaskRegistry | None, task: object) -> bool:
    """Whether the registered task ``task`` reads box annotations (``False`` for an unknown task or no registry)."""
    if tasks is None or not isinstance(task, str) or task not in tasks:
        return False
    return BOX_ANNOTATION in tasks.get(task).annotation_types
