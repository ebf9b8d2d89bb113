"""Per-image detection results, stored as one columnar ``results.npz`` (numpy only: the server pages it).

Boxes are ragged per image, so they are kept flat with per-image offsets:
``gt_*`` rows ``gt_offsets[i]:gt_offsets[i+1]`` are image ``i``'s ground
truth and ``pred_*`` rows its predictions at or above the score threshold,
highest score first. ``pred_match`` is the ground-truth row (within the image)
each prediction was matched to, or -1; ``pred_iou`` its IoU with that box (a
false positive's best IoU with any box, for insight). Boxes are ``[x, y, w, h]``
in pixels of the stored image, like the dataset's annotations.

The reading interface is the one core's results index asks of every task's
table (see ``core/evaluation/results.py``): ``correct`` means no error (no
false positive, no missed box); ``sort_values("error")`` is the number of
errors, ``sort_values("confidence")`` the best prediction's score;
``true_class_mask``/``predicted_class_mask`` match an image with *any* box
of the class.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.core import CorruptDataError, atomic_write_bytes, read_result_columns

_COLUMNS = ("classes", "filenames", "subsets", "gt_offsets", "gt_boxes", "gt_labels", "gt_match", "pred_offsets",
            "pred_boxes", "pred_scores", "pred_labels", "pred_match", "pred_iou")


@dataclass
class DetectionResultsTable:
    classes: list[str]
    filenames: np.ndarray  # (N,) str
    subsets: np.ndarray  # (N,) str
    gt_offsets: np.ndarray  # (N + 1,) int64
    gt_boxes: np.ndarray  # (G, 4) float32 xywh
    gt_labels: np.ndarray  # (G,) int32
    gt_match: np.ndarray  # (G,) int32: the prediction row (within the image) matched to it, or -1
    pred_offsets: np.ndarray  # (N + 1,) int64
    pred_boxes: np.ndarray  # (P, 4) float32 xywh
    pred_scores: np.ndarray  # (P,) float32
    pred_labels: np.ndarray  # (P,) int32
    pred_match: np.ndarray  # (P,) int32
    pred_iou: np.ndarray  # (P,) float32
    filename_order: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.filenames.shape[0])

    # -- per-image counts -------------------------------------------------------------------
    def _per_image(self, offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
        sums = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
        return sums[offsets[1:]] - sums[offsets[:-1]]

    @property
    def true_positives(self) -> np.ndarray:
        """Predictions matched to a box of their class, per image."""
        correct = (self.pred_match >= 0) & self._same_class_as_match()
        return self._per_image(self.pred_offsets, correct.astype(np.int64))

    @property
    def false_positives(self) -> np.ndarray:
        return np.diff(self.pred_offsets) - self.true_positives

    @property
    def false_negatives(self) -> np.ndarray:
        return np.diff(self.gt_offsets) - self.true_positives

    @property
    def errors(self) -> np.ndarray:
        return self.false_positives + self.false_negatives

    @property
    def correct(self) -> np.ndarray:
        return self.errors == 0

    def _same_class_as_match(self) -> np.ndarray:
        """For each prediction: is its matched box (if any) of the same class."""
        image_of_pred = np.repeat(np.arange(len(self)), np.diff(self.pred_offsets))
        matched_row = self.gt_offsets[image_of_pred] + np.maximum(self.pred_match, 0)
        gt_labels = self.gt_labels[np.minimum(matched_row, max(0, self.gt_labels.shape[0] - 1))] \
            if self.gt_labels.size else np.full(self.pred_labels.shape, -1)
        return (self.pred_match >= 0) & (gt_labels == self.pred_labels)

    # -- what the results index asks ---------------------------------------------------------
    def true_class_mask(self, class_id: int) -> np.ndarray:
        return self._per_image(self.gt_offsets, (self.gt_labels == class_id).astype(np.int64)) > 0

    def predicted_class_mask(self, class_id: int) -> np.ndarray:
        return self._per_image(self.pred_offsets, (self.pred_labels == class_id).astype(np.int64)) > 0

    def sort_values(self, key: str) -> np.ndarray:
        if key == "confidence":
            best = np.zeros(len(self), dtype=np.float64)
            starts, ends = self.pred_offsets[:-1], self.pred_offsets[1:]
            has = ends > starts
            best[has] = self.pred_scores[starts[has]]  # highest score first within an image
            return best
        return self.errors.astype(np.float64)

    def row(self, i: int) -> dict[str, Any]:
        """Image ``i`` in the API shape (DESIGN section 10)."""
        g0, g1 = int(self.gt_offsets[i]), int(self.gt_offsets[i + 1])
        p0, p1 = int(self.pred_offsets[i]), int(self.pred_offsets[i + 1])
        ground_truth = [{"class_id": int(c), "class_name": self.classes[int(c)], "bbox": _box(b)}
                        for c, b in zip(self.gt_labels[g0:g1], self.gt_boxes[g0:g1], strict=True)]
        predictions = [{"class_id": int(c), "class_name": self.classes[int(c)], "score": float(s), "bbox": _box(b)}
                       for c, s, b in zip(self.pred_labels[p0:p1], self.pred_scores[p0:p1], self.pred_boxes[p0:p1],
                                          strict=True)]
        matches: list[dict[str, Any]] = []
        matched_gt: set[int] = set()
        for k in range(p1 - p0):
            j = int(self.pred_match[p0 + k])
            iou = float(self.pred_iou[p0 + k])
            if j >= 0 and int(self.gt_labels[g0 + j]) == int(self.pred_labels[p0 + k]):
                matches.append({"type": "TP", "prediction": k, "ground_truth": j, "iou": iou})
                matched_gt.add(j)
            else:  # a box where there is none, or of the wrong class (that box is then also missed)
                matches.append({"type": "FP", "prediction": k, "ground_truth": j if j >= 0 else None,
                                "iou": iou if iou > 0 else None})
        for j in range(g1 - g0):
            if j not in matched_gt:
                matches.append({"type": "FN", "prediction": None, "ground_truth": j, "iou": None})
        tp = sum(1 for m in matches if m["type"] == "TP")
        fp, fn = len(predictions) - tp, len(ground_truth) - tp
        return {
            "filename": str(self.filenames[i]),
            "subset": str(self.subsets[i]),
            "ground_truth": ground_truth,
            "predictions": predictions,
            "matches": matches,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "correct": fp == 0 and fn == 0,
        }

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the table atomically (a reader never sees half a file)."""
        buffer = io.BytesIO()
        arrays = {name: getattr(self, name) for name in _COLUMNS if name != "classes"}
        np.savez(buffer, classes=np.asarray(self.classes, dtype=str), kind=np.asarray("object_detection"),
                 filename_order=np.argsort(self.filenames, kind="stable").astype(np.int64), **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> DetectionResultsTable:
        """Read a table written by ``save`` (never unpickles anything)."""
        arrays, order = read_result_columns(path, _COLUMNS)
        classes = [str(c) for c in arrays.pop("classes").tolist()]
        table = cls(classes=classes, **arrays, filename_order=order)
        if not table._consistent():
            raise CorruptDataError(f"{path.name} is corrupt (inconsistent columns)", {"file": path.name})
        return table

    def _consistent(self) -> bool:
        n, c = len(self), len(self.classes)
        for offsets, rows in ((self.gt_offsets, self.gt_labels.shape[0]), (self.pred_offsets, self.pred_labels.shape[0])):
            if offsets.shape != (n + 1,) or offsets[0] != 0 or offsets[-1] != rows or np.any(np.diff(offsets) < 0):
                return False
        labels = np.concatenate([self.gt_labels, self.pred_labels])
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            return False
        if self.filename_order is not None and sorted(self.filename_order.tolist()) != list(range(n)):
            self.filename_order = None
        return (self.subsets.shape == (n,) and self.gt_boxes.shape == (self.gt_labels.shape[0], 4)
                and self.pred_boxes.shape == (self.pred_labels.shape[0], 4)
                and self.pred_scores.shape == self.pred_match.shape == self.pred_iou.shape == self.pred_labels.shape
                and self.gt_match.shape == self.gt_labels.shape)


def _box(values: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in values]
