"""Detection targets: an image's boxes, scaled to the training size, moved by augmentations, batched as a list.

A target is ``{"boxes": float32 [N, 4] xyxy in pixels of the resized image,
"labels": int64 [N]}`` (``N`` may be 0: a background image). A padding item of
a DDP validation shard also has ``"ignore": True`` and counts in no metric.
A subset's targets are made from the dataset's annotation columns at once
(``subset_targets``), never from a dict per image.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from modelyard.core import CorruptDataError, EvaluationOutcome, Sample, TargetStore, TaskRuntime, ValidationError

from .module import DetectionModule

BOX_ANNOTATION = "bbox"


def empty_target() -> dict[str, torch.Tensor]:
    return {"boxes": torch.zeros((0, 4), dtype=torch.float32), "labels": torch.zeros((0,), dtype=torch.int64)}


def subset_targets(dataset: Mapping[str, Any], split_index: int, subset: str, image_size: Sequence[int]) -> list[Sample]:
    """Every image of the subset with its ``bbox`` annotations as a target for it resized to ``image_size`` (height, width).

    Read from the dataset's columns for the whole subset at once: the boxes of
    every image are scaled in one numpy expression (in float64, then float32,
    as the per-image arithmetic was), and each image gets its own tensors.
    An image without a size, or a box without a valid class id or four
    numbers, is ``CorruptDataError`` naming the first such image.
    """
    view = TaskRuntime.dataset_view(dataset)
    num_classes = len(view.index.classes)
    positions = view.subset_positions(split_index, subset)
    names = view.filenames(positions)
    sizes = view.image_sizes(positions).astype(np.float64)
    boxes = view.annotations(positions, BOX_ANNOTATION)
    invalid = ~boxes.has_class_id | (boxes.class_id < 0) | (boxes.class_id >= num_classes) | ~boxes.has_bbox
    no_size = (sizes <= 0).any(axis=1)
    broken = no_size.copy()
    broken[boxes.owner[invalid]] = True
    if broken.any():
        first = int(np.argmax(broken))
        problem = "has no size" if no_size[first] else "has an invalid box annotation"
        raise CorruptDataError(f"dataset.json: image {names[first]} {problem}")
    sx, sy = (float(image_size[1]) / sizes[:, 0])[boxes.owner], (float(image_size[0]) / sizes[:, 1])[boxes.owner]
    x, y, w, h = boxes.bbox.T
    xyxy = np.stack([x * sx, y * sy, (x + w) * sx, (y + h) * sy], axis=1).astype(np.float32)
    counts = np.bincount(boxes.owner, minlength=len(positions)).tolist()
    all_boxes = torch.from_numpy(xyxy).split(counts)
    all_labels = torch.from_numpy(boxes.class_id).split(counts)
    return [(name, {"boxes": image_boxes.clone(), "labels": labels.clone(), "source_size": (width, height)})
            for name, image_boxes, labels, (width, height) in zip(names, all_boxes, all_labels, sizes.tolist(), strict=True)]


def clamp_and_sanitize(boxes: Any, min_size: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ``ClampBoundingBoxes`` then ``SanitizeBoundingBoxes(min_size)`` on XYXY ``BoundingBoxes``.

    Returns the clamped float32 boxes that are kept and the mask of those kept.
    The same arithmetic as the two transforms in a few tensor ops: building
    and dispatching them per image cost ~1 ms, an eighth of a CPU training step
    of ``simple_detector`` (the ``train_overhead_detection`` benchmark row).
    """
    height, width = boxes.canvas_size
    return clamp_boxes(boxes.as_subclass(torch.Tensor), int(height), int(width), min_size)


def clamp_boxes(xyxy: torch.Tensor, height: int, width: int, min_size: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamp XYXY boxes to a ``height`` x ``width`` canvas; keep those with both sides >= ``min_size``.

    Once clamped to the canvas a box is inside it, so sanitising only checks
    the sides (sides of at least ``min_size >= 1`` also make the area >= 1).
    """
    clamped = xyxy.float().clamp(min=0).minimum(_canvas_limits(height, width))
    keep = (clamped[:, 2:] - clamped[:, :2] >= min_size).all(dim=1)
    return clamped[keep], keep


def flip_boxes(boxes: torch.Tensor, axis: int, height: int, width: int) -> torch.Tensor:
    """XYXY boxes mirrored along an image axis (``-1`` left-right, ``-2`` top-bottom), as torchvision's flips compute them."""
    low, high, extent = (0, 2, width) if axis == -1 else (1, 3, height)
    moved = boxes.clone()
    moved[:, low] = -(boxes[:, high] - extent)
    moved[:, high] = -(boxes[:, low] - extent)
    return moved


@functools.lru_cache(maxsize=64)
def _canvas_limits(height: int, width: int) -> torch.Tensor:
    return torch.tensor([width, height, width, height], dtype=torch.float32)


class BoxStore(TargetStore):
    """One target dict per item; a batch is the list of them (detectors take per-image targets)."""

    def __init__(self, targets: Sequence[dict[str, torch.Tensor]], pad: int = 0) -> None:
        self.targets = list(targets) + [{**empty_target(), "ignore": True} for _ in range(pad)]

    def __len__(self) -> int:
        return len(self.targets)

    def item(self, index: int) -> dict[str, Any]:
        return self.targets[index]

    def batch(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self.targets[i] for i in indices]

    def collate(self, targets: Sequence[Any]) -> list[dict[str, Any]]:
        return list(targets)


class DetectionRuntime(TaskRuntime):
    def check_dataset(self, dataset: Mapping[str, Any], field: str = "dataset") -> None:
        if not dataset.get("classes"):
            raise ValidationError("the dataset has no box classes to detect; import annotated images first",
                                  field=f"{field}.classes")

    def samples(self, dataset: Mapping[str, Any], split_index: int, subset: str, image_size: Sequence[int]) -> list[Sample]:
        """Every image the split puts in ``subset``, background images (no boxes) included (``subset_targets``)."""
        return subset_targets(dataset, split_index, subset, image_size)

    def target_store(self, targets: Sequence[Any], pad: int = 0) -> BoxStore:
        return BoxStore(targets, pad)

    def augment(self, transform: Callable[..., Any], image: torch.Tensor, target: Any) -> tuple[torch.Tensor, Any]:
        """Move the boxes with the pixels, clamp them to the image and drop those a crop or rotation emptied."""
        from torchvision import tv_tensors

        height, width = int(image.shape[-2]), int(image.shape[-1])
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width))
        sample = transform({"image": image, "boxes": boxes, "labels": target["labels"]})
        moved, keep = clamp_and_sanitize(sample["boxes"])
        return sample["image"], {"boxes": moved, "labels": sample["labels"][keep]}

    def flip_targets(self, targets: list[Any], flips: Sequence[tuple[int, torch.Tensor]],
                     image_size: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """``augment`` of a flip-only pipeline for a whole batch: every box of it flipped and clamped in a few ops."""
        height, width = int(image_size[0]), int(image_size[1])
        counts = torch.tensor([len(t["boxes"]) for t in targets], dtype=torch.int64)
        boxes = torch.cat([t["boxes"].float() for t in targets]) if targets else empty_target()["boxes"]
        labels = torch.cat([t["labels"] for t in targets]) if targets else empty_target()["labels"]
        for axis, flipped in flips:
            per_box = flipped.repeat_interleave(counts)
            if bool(per_box.any()):
                boxes[per_box] = flip_boxes(boxes[per_box], axis, height, width)
        kept, keep = clamp_boxes(boxes, height, width)
        kept_counts = [int(part.sum()) for part in keep.split(counts.tolist())]
        return [{"boxes": b, "labels": l}
                for b, l in zip(kept.split(kept_counts), labels[keep].split(kept_counts), strict=True)]

    def evaluation_samples(self, dataset: Mapping[str, Any], split_index: int, subset: str, image_size: Sequence[int],
                           model_classes: list[str]) -> tuple[list[Sample], int]:
        """Boxes in the model's class ids (matched by name), with the factors back to the stored image's pixels.

        An image with a box of a class the model does not know is skipped and counted.
        """
        view = self.dataset_view(dataset)
        model_ids = {name: i for i, name in enumerate(model_classes)}
        dataset_classes = [str(c) for c in view.index.classes]
        to_model = [model_ids.get(name, -1) for name in dataset_classes]
        samples: list[Sample] = []
        skipped = 0
        for filename, target in self.samples(view, split_index, subset, image_size):
            labels = [to_model[int(c)] for c in target["labels"].tolist()]
            if any(c < 0 for c in labels):
                skipped += 1
                continue
            image = target.pop("source_size")
            samples.append((filename, {**target, "labels": torch.tensor(labels, dtype=torch.int64),
                                       "source_scale": (image[0] / float(image_size[1]), image[1] / float(image_size[0]))}))
        return samples, skipped

    def evaluate(self, items: list[tuple[str, str, Any]], outputs: list[Any], classes: list[str],
                 options: dict[str, Any]) -> EvaluationOutcome:
        from .evaluation import DEFAULT_SCORE_THRESHOLD, evaluate_detections

        threshold = options.get("score_threshold")
        metrics, table = evaluate_detections(items, outputs, classes,
                                             DEFAULT_SCORE_THRESHOLD if threshold is None else float(threshold))
        return EvaluationOutcome(metrics=metrics, results=table)

    def predictions(self, output: Any, classes: list[str], source_size: tuple[int, int],
                    options: dict[str, Any]) -> list[dict[str, Any]]:
        """The boxes scoring at least ``score_threshold`` (default 0.5), highest first, ``[x, y, w, h]`` in the image's pixels."""
        from .evaluation import DEFAULT_SCORE_THRESHOLD

        threshold = options.get("score_threshold")
        threshold = DEFAULT_SCORE_THRESHOLD if threshold is None else float(threshold)
        height, width = options["input_size"]
        sx, sy = source_size[0] / float(width), source_size[1] / float(height)
        answer = []
        for box, score, label in zip(output["boxes"], output["scores"], output["labels"], strict=True):
            if float(score) >= threshold:
                x1, y1, x2, y2 = (float(v) for v in box)
                answer.append({"class_id": int(label), "class_name": classes[int(label)], "score": float(score),
                               "bbox": [round(x1 * sx, 2), round(y1 * sy, 2), round((x2 - x1) * sx, 2),
                                        round((y2 - y1) * sy, 2)]})
        return sorted(answer, key=lambda p: -p["score"])

    def prediction_outputs(self, exported: Any) -> list[dict[str, Any]]:
        """An export's ``(boxes, scores, labels)`` per image, as ``evaluate_batch`` gives them."""
        return [{"boxes": boxes, "scores": scores, "labels": labels} for boxes, scores, labels in exported]

    def module_class(self) -> type[DetectionModule]:
        return DetectionModule

    # -- export (plugins/object_detection/export.py) -------------------------------------------
    def export_options_schema(self) -> dict[str, Any]:
        from .export import OPTIONS_SCHEMA

        return dict(OPTIONS_SCHEMA)

    def check_export_options(self, options: dict[str, Any], format_defaults: dict[str, Any]) -> None:
        from .export import check_options

        check_options(options, format_defaults)

    def export_outputs(self) -> dict[str, dict[int, str]]:
        from .export import OUTPUTS

        return {name: dict(axes) for name, axes in OUTPUTS.items()}

    def export_input_axes(self) -> dict[int, str]:
        return {}  # one image of the run's size

    def export_metadata(self, options: dict[str, Any]) -> dict[str, Any]:
        from .export import score_threshold

        return {"score_threshold": score_threshold(options)}

    def export_module(self, net: Any, options: dict[str, Any]) -> Any:
        from .export import export_module

        return export_module(net, options)

    def reference_outputs(self, net: Any, batch: torch.Tensor) -> Any:
        from .export import reference_outputs

        return reference_outputs(net, batch)

    def exported_outputs(self, predict: Callable[[Any], Any], batch: Any, chunk: int) -> Any:
        from .export import exported_outputs

        return exported_outputs(predict, batch, chunk)

    def compare_exported(self, reference: Any, exported: Any, options: dict[str, Any],
                         policy: Any = None) -> dict[str, Any]:
        from .export import compare, score_threshold

        return compare(reference, exported, score_threshold(options), half=options.get("fp16") is True, policy=policy)

    def verification_summary(self, verification: dict[str, Any]) -> str:
        from .export import summary

        return summary(verification)

    def export_usage(self) -> dict[str, str] | None:
        from .export import USAGE

        return dict(USAGE)
