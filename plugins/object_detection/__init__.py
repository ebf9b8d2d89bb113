"""The ``object_detection`` task: zero or more labelled boxes per image (DESIGN section 10).

Annotations are ``{"type": "bbox", "class_id", "class_name", "bbox": [x, y,
w, h]}`` in pixels of the stored image. Training follows ``val/map_50``
(mAP at IoU 0.5, torchmetrics' ``MeanAveragePrecision`` on the
``faster_coco_eval`` backend) and also logs ``val/map`` (IoU .5:.95) and
``val/loss``. Augmentations are limited to the transforms that move boxes with
the pixels (or leave both alone): see ``BOX_SAFE_AUGMENTATIONS``.
"""

from __future__ import annotations

from modelyard.core import AUGMENTATIONS, Task, TaskRegistry, hookimpl

#: Core's augmentations that do not move boxes with the pixels: AutoAugment, RandAugment, TrivialAugmentWide and
#: AugMix refuse boxes, RandomErasing would erase objects and keep their boxes, ElasticTransform warps objects so
#: their boxes are no longer tight.
NOT_BOX_SAFE: frozenset[str] = frozenset({"AugMix", "AutoAugment", "ElasticTransform", "RandAugment", "RandomErasing",
                                         "TrivialAugmentWide"})
#: transforms v2 that move ``BoundingBoxes`` with the image (geometric) or touch pixels only
BOX_SAFE_AUGMENTATIONS: tuple[str, ...] = tuple(name for name in AUGMENTATIONS if name not in NOT_BOX_SAFE)


def _runtime():  # type: ignore[no-untyped-def]
    from .runtime import DetectionRuntime  # torch: only where training or evaluation runs

    return DetectionRuntime(OBJECT_DETECTION)


def _load_results(path):  # type: ignore[no-untyped-def]
    from .results import DetectionResultsTable  # numpy only

    return DetectionResultsTable.load(path)


OBJECT_DETECTION = Task(
    id="object_detection",
    name="Object detection",
    description="Boxes around the objects in an image, each with a class; a model answers with scored boxes.",
    annotation_types=("bbox",),
    metrics={"train/loss": "min", "val/loss": "min", "val/map": "max", "val/map_50": "max"},
    monitor="val/map_50",
    default_architecture="simple_detector",
    config_defaults={
        "data": {
            "image_size": [96, 96],
            "batch_size": 16,
            "augmentations": {"train": [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}], "val": []},
        },
        "training": {"optimizer": {"lr": 0.002}},
    },
    augmentations=BOX_SAFE_AUGMENTATIONS,
    runtime=_runtime,
    load_results=_load_results,
)


@hookimpl
def register_tasks(registry: TaskRegistry) -> None:
    registry.add(OBJECT_DETECTION)
