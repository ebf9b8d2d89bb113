"""An independent re-computation of evaluation metrics with plain numpy, from the stored per-image results.

Written from the definitions (not from torchmetrics) so the tests cross-check
the product's numbers: precision = TP / (TP + FP) (0 when a class is never
predicted), recall = TP / support, F1 their harmonic mean (0 when both are 0);
macro averages over the classes that occur in the targets or predictions,
weighted averages by support.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelyard.core.evaluation.results import ResultsTable


def reference_metrics(table: ResultsTable) -> dict[str, Any]:
    c = len(table.classes)
    gt = table.ground_truth.astype(np.int64)
    pred = table.predicted.astype(np.int64)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (gt, pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted_count, out=np.zeros(c), where=predicted_count > 0)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(c), where=denominator > 0)
    present = (support > 0) | (predicted_count > 0)
    weights = support / support.sum()
    result: dict[str, Any] = {
        "accuracy": float((gt == pred).mean()),
        "loss": float(table.loss.astype(np.float64).mean()),
        "confusion_matrix": confusion.tolist(),
        "support": support.astype(int).tolist(),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro": {"precision": precision[present].mean(), "recall": recall[present].mean(), "f1": f1[present].mean()},
        "weighted": {"precision": (precision * weights).sum(), "recall": (recall * weights).sum(), "f1": (f1 * weights).sum()},
    }
    if table.topk_ids.shape[1] >= 5:
        result["top5_accuracy"] = float((table.topk_ids[:, :5] == gt[:, None]).any(axis=1).mean())
    return result


def assert_metrics_match_reference(metrics: dict[str, Any], table: ResultsTable, tol: float = 1e-5) -> None:
    """Every aggregate the product stored equals the numpy re-computation from the per-image rows."""
    ref = reference_metrics(table)
    assert metrics["num_images"] == len(table)
    assert abs(metrics["accuracy"] - ref["accuracy"]) < tol
    assert abs(metrics["loss"] - ref["loss"]) < 1e-4
    assert metrics["confusion_matrix"]["labels"] == table.classes
    assert metrics["confusion_matrix"]["matrix"] == ref["confusion_matrix"]
    for i, name in enumerate(table.classes):
        per = metrics["per_class"][name]
        assert per["support"] == ref["support"][i]
        for key in ("precision", "recall", "f1"):
            assert abs(per[key] - ref[key][i]) < tol, (name, key, per[key], ref[key][i])
    for average in ("macro", "weighted"):
        for key in ("precision", "recall", "f1"):
            assert abs(metrics[average][key] - ref[average][key]) < tol, (average, key)
    if "top5_accuracy" in ref and len(table.classes) > 5:
        assert abs(metrics["top5_accuracy"] - ref["top5_accuracy"]) < tol
    else:
        assert "top5_accuracy" not in metrics
