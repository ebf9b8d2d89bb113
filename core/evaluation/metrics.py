"""Aggregate classification metrics of one evaluation, computed with torchmetrics.

Conventions (they matter when someone re-computes the numbers by hand):
a class that is never predicted has precision 0 (and so F1 0); ``macro``
averages over the classes that occur in the targets or the predictions
(torchmetrics ignores classes with no true positive, false positive or false
negative); ``weighted`` weights each class by its support. Curves are
one-vs-rest per class, downsampled to at most ``MAX_CURVE_POINTS`` points;
values that are undefined (AP or ROC of a class with no positive sample) are
``None`` so the JSON stays valid.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_average_precision,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_precision_recall_curve,
    multiclass_recall,
    multiclass_roc,
)

MAX_CURVE_POINTS = 200
TOP5_MIN_CLASSES = 6  # top-5 accuracy is only informative with more than 5 classes


def downsample_curve(xs: np.ndarray, ys: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> tuple[list[float], list[float]]:
    """Keep at most ``max_points`` evenly spaced points of a curve, always including both ends."""
    n = len(xs)
    if n > max_points:
        keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))
        xs, ys = xs[keep], ys[keep]
    return [_finite(v) for v in xs.tolist()], [_finite(v) for v in ys.tolist()]


def compute_metrics(probabilities: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Every aggregate number of an evaluation (see the module docstring for conventions).

    ``probabilities`` is ``(N, C)`` softmax output, ``targets`` ``(N,)`` class ids,
    ``losses`` ``(N,)`` per-image cross-entropy.
    """
    num_classes = len(classes)
    probs = probabilities.detach().float().cpu()
    target = targets.detach().long().cpu()
    if num_classes < 2:
        raise ValueError("metrics need at least two classes")
    with warnings.catch_warnings():
        # a class with no sample in the subset is expected; its undefined values become None below
        warnings.filterwarnings("ignore", message=".*[Nn]o positive samples.*")
        warnings.filterwarnings("ignore", message=".*[Nn]o negative samples.*")
        return _compute(probs, target, losses, classes)


def _compute(probs: torch.Tensor, target: torch.Tensor, losses: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    num_classes = len(classes)
    kw: dict[str, Any] = {"num_classes": num_classes, "validate_args": False}
    per_precision = multiclass_precision(probs, target, average="none", **kw)
    per_recall = multiclass_recall(probs, target, average="none", **kw)
    per_f1 = multiclass_f1_score(probs, target, average="none", **kw)
    per_ap = multiclass_average_precision(probs, target, average=None, **kw)
    support = torch.bincount(target, minlength=num_classes)
    confusion = multiclass_confusion_matrix(probs, target, **kw)

    metrics: dict[str, Any] = {
        "num_images": int(target.numel()),
        "accuracy": _finite(multiclass_accuracy(probs, target, average="micro", **kw).item()),
    }
    if num_classes >= TOP5_MIN_CLASSES:
        metrics["top5_accuracy"] = _finite(multiclass_accuracy(probs, target, average="micro", top_k=5, **kw).item())
    metrics["loss"] = _finite(losses.detach().float().mean().item())
    for average in ("macro", "weighted"):
        metrics[average] = {
            "precision": _finite(multiclass_precision(probs, target, average=average, **kw).item()),
            "recall": _finite(multiclass_recall(probs, target, average=average, **kw).item()),
            "f1": _finite(multiclass_f1_score(probs, target, average=average, **kw).item()),
        }
    metrics["per_class"] = {
        name: {
            "precision": _finite(per_precision[i].item()),
            "recall": _finite(per_recall[i].item()),
            "f1": _finite(per_f1[i].item()),
            "support": int(support[i].item()),
            "ap": _finite(per_ap[i].item()) if support[i] > 0 else None,
        }
        for i, name in enumerate(classes)
    }
    metrics["confusion_matrix"] = {"labels": list(classes), "matrix": confusion.tolist()}
    metrics["curves"] = _curves(probs, target, classes, support)
    return metrics


def _curves(probs: torch.Tensor, target: torch.Tensor, classes: list[str], support: torch.Tensor) -> dict[str, Any]:
    kw: dict[str, Any] = {"num_classes": len(classes), "validate_args": False}
    precisions, recalls, _ = multiclass_precision_recall_curve(probs, target, **kw)
    fprs, tprs, _ = multiclass_roc(probs, target, **kw)
    curves: dict[str, Any] = {}
    for i, name in enumerate(classes):
        if support[i] == 0:  # one-vs-rest curves are undefined without a positive sample
            curves[name] = {"pr": {"precision": [], "recall": []}, "roc": {"fpr": [], "tpr": []}}
            continue
        precision, recall = downsample_curve(precisions[i].numpy(), recalls[i].numpy())
        fpr, tpr = downsample_curve(fprs[i].numpy(), tprs[i].numpy())
        curves[name] = {"pr": {"precision": precision, "recall": recall}, "roc": {"fpr": fpr, "tpr": tpr}}
    return curves


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
