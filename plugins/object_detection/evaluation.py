"""Detection evaluation: mAP over every prediction, and matches, precision, recall and confusion at a threshold.

- ``map`` (IoU .5:.95), ``map_50``, ``map_75`` and ``per_class_ap`` (AP over
  IoU .5:.95 per class, ``None`` for a class with no box in the subset) come
  from torchmetrics' ``MeanAveragePrecision`` on the ``faster_coco_eval``
  backend, on every prediction the model makes (no threshold: AP integrates
  over scores).
- At ``score_threshold`` (default 0.5) each image's predictions, highest score
  first, are matched greedily to the unmatched ground-truth box of the same
  class with the highest IoU >= ``IOU_THRESHOLD`` (0.5): a true positive. A
  prediction left over takes the best unmatched box of another class at that
  IoU (a confusion: a false positive, and that box is missed); the rest are
  false positives on the background, and unmatched boxes false negatives.
  ``precision``/``recall`` (all boxes) and ``per_class`` follow from these
  counts; the ``confusion_matrix`` has rows = true class, columns = predicted
  class, plus a ``background`` row and column.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .results import DetectionResultsTable

IOU_THRESHOLD = 0.5
DEFAULT_SCORE_THRESHOLD = 0.5
BACKGROUND = "background"


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box of ``a`` with every one of ``b``."""
    if a.size == 0 or b.size == 0:
        return np.zeros((a.shape[0], b.shape[0]), dtype=np.float64)
    a, b = a.astype(np.float64), b.astype(np.float64)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_image(pred_boxes: np.ndarray, pred_labels: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray,
                iou_threshold: float = IOU_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching (predictions in the order given, highest score first); see the module docstring.

    Returns each prediction's matched ground-truth index (-1: none), its IoU
    with that box (a false positive's best IoU with any box), and each ground
    truth's matched prediction (-1: missed).
    """
    ious = iou_matrix(pred_boxes, gt_boxes)
    pred_match = np.full(pred_boxes.shape[0], -1, dtype=np.int32)
    pred_iou = ious.max(axis=1).astype(np.float32) if ious.size else np.zeros(pred_boxes.shape[0], np.float32)
    gt_match = np.full(gt_boxes.shape[0], -1, dtype=np.int32)
    for same_class in (True, False):
        for k in range(pred_boxes.shape[0]):
            if pred_match[k] >= 0:
                continue
            candidates = (gt_match < 0) & (ious[k] >= iou_threshold)
            if same_class:
                candidates &= gt_labels == pred_labels[k]
            if candidates.any():
                j = int(np.argmax(np.where(candidates, ious[k], -1.0)))
                pred_match[k], gt_match[j], pred_iou[k] = j, k, ious[k, j]
    return pred_match, pred_iou, gt_match


def evaluate_detections(items: Sequence[tuple[str, str, Any]], outputs: Sequence[dict[str, np.ndarray]],
                        classes: list[str], score_threshold: float = DEFAULT_SCORE_THRESHOLD
                        ) -> tuple[dict[str, Any], DetectionResultsTable]:
    """The metrics (``EvaluationMetrics`` fields) and the per-image table; see the module docstring."""
    from torchmetrics.detection import MeanAveragePrecision

    num_classes = len(classes)
    average_precision = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval",
                                             class_metrics=True)
    confusion = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)  # last row/column: background
    tp = np.zeros(num_classes, dtype=np.int64)
    fp = np.zeros(num_classes, dtype=np.int64)
    support = np.zeros(num_classes, dtype=np.int64)
    columns: dict[str, list[Any]] = {name: [] for name in ("gt_boxes", "gt_labels", "gt_match", "pred_boxes",
                                                          "pred_scores", "pred_labels", "pred_match", "pred_iou")}
    gt_offsets, pred_offsets = [0], [0]
    for (_, _, target), output in zip(items, outputs, strict=True):
        gt_boxes, gt_labels = target["boxes"].numpy(), target["labels"].numpy()
        boxes, scores, labels = output["boxes"], output["scores"], output["labels"]
        average_precision.update([{"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                                   "labels": torch.from_numpy(labels)}],
                                 [{"boxes": target["boxes"], "labels": target["labels"]}])
        keep = scores >= score_threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        pred_match, pred_iou, gt_match = match_image(boxes, labels, gt_boxes, gt_labels)
        np.add.at(support, gt_labels, 1)
        for k, j in enumerate(pred_match):
            if j >= 0 and gt_labels[j] == labels[k]:
                tp[labels[k]] += 1
            else:
                fp[labels[k]] += 1
            confusion[gt_labels[j] if j >= 0 else num_classes, labels[k]] += 1
        for j in np.flatnonzero(gt_match < 0):
            confusion[gt_labels[j], num_classes] += 1
        scale = _to_source_pixels(target)
        columns["gt_boxes"].append(_xywh(gt_boxes, scale))
        columns["gt_labels"].append(gt_labels.astype(np.int32))
        columns["gt_match"].append(gt_match)
        columns["pred_boxes"].append(_xywh(boxes, scale))
        columns["pred_scores"].append(scores.astype(np.float32))
        columns["pred_labels"].append(labels.astype(np.int32))
        columns["pred_match"].append(pred_match)
        columns["pred_iou"].append(pred_iou)
        gt_offsets.append(gt_offsets[-1] + gt_boxes.shape[0])
        pred_offsets.append(pred_offsets[-1] + boxes.shape[0])
    result = average_precision.compute()
    table = DetectionResultsTable(
        classes=list(classes),
        filenames=np.asarray([name for name, _, _ in items], dtype=str),
        subsets=np.asarray([subset for _, subset, _ in items], dtype=str),
        gt_offsets=np.asarray(gt_offsets, dtype=np.int64),
        pred_offsets=np.asarray(pred_offsets, dtype=np.int64),
        **{name: _concat(values, name) for name, values in columns.items()},
    )
    found = tp.sum() + fp.sum()
    per_class_ap = _per_class_ap(result, classes, support)
    metrics = {
        "num_images": len(items),
        "map": _finite(result["map"]),
        "map_50": _finite(result["map_50"]),
        "map_75": _finite(result["map_75"]),
        "per_class_ap": per_class_ap,
        "precision": _ratio(tp.sum(), found),
        "recall": _ratio(tp.sum(), support.sum()),
        "per_class": {name: _class_metrics(int(tp[i]), int(fp[i]), int(support[i]), per_class_ap[name])
                      for i, name in enumerate(classes)},
        "confusion_matrix": {"labels": [*classes, BACKGROUND], "matrix": confusion.tolist()},
        "score_threshold": float(score_threshold),
        "iou_threshold": IOU_THRESHOLD,
    }
    return metrics, table


def _to_source_pixels(target: dict[str, Any]) -> tuple[float, float]:
    """From the model's input pixels back to the stored image's (``source_scale`` of the target: x, y factors)."""
    sx, sy = target.get("source_scale", (1.0, 1.0))
    return float(sx), float(sy)


def _xywh(boxes: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    if boxes.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    sx, sy = scale
    out = np.empty((boxes.shape[0], 4), dtype=np.float32)
    out[:, 0], out[:, 1] = boxes[:, 0] * sx, boxes[:, 1] * sy
    out[:, 2], out[:, 3] = (boxes[:, 2] - boxes[:, 0]) * sx, (boxes[:, 3] - boxes[:, 1]) * sy
    return out


def _concat(values: list[np.ndarray], name: str) -> np.ndarray:
    if name.endswith("_boxes"):
        return np.concatenate(values).astype(np.float32) if values else np.zeros((0, 4), np.float32)
    dtype = np.float32 if name in ("pred_scores", "pred_iou") else np.int32
    return np.concatenate(values).astype(dtype) if values else np.zeros((0,), dtype)


def _per_class_ap(result: dict[str, torch.Tensor], classes: list[str], support: np.ndarray) -> dict[str, float | None]:
    values = {name: None for name in classes}
    ids = result.get("classes")
    per_class = result.get("map_per_class")
    if ids is None or per_class is None:
        return values
    for class_id, ap in zip(ids.reshape(-1).tolist(), per_class.reshape(-1).tolist(), strict=True):
        if 0 <= int(class_id) < len(classes) and support[int(class_id)] > 0:
            values[classes[int(class_id)]] = _finite(ap)
    return values


def _class_metrics(tp: int, fp: int, support: int, ap: float | None) -> dict[str, Any]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, support)
    f1 = None if precision is None or recall is None or precision + recall == 0 else 2 * precision * recall / (precision + recall)
    if precision is not None and recall is not None and precision + recall == 0:
        f1 = 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "ap": ap}


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None
