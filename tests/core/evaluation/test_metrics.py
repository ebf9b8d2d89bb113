"""Aggregate metrics: cross-checked against an independent numpy computation on the stored rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from modelyard.core.evaluation.metrics import MAX_CURVE_POINTS, compute_metrics, downsample_curve
from modelyard.core.evaluation.results import ResultsTable
from tests.core.evaluation.numpy_reference import assert_metrics_match_reference


def _evaluate(num_classes: int, n: int, seed: int, tmp_path: Path, never_predicted: int | None = None):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes, n)
    logits = rng.normal(size=(n, num_classes)) + 2.5 * np.eye(num_classes)[targets] * (rng.random(n) < 0.7)[:, None]
    if never_predicted is not None:
        logits[:, never_predicted] = -50.0
    logits_t = torch.tensor(logits, dtype=torch.float32)
    targets_t = torch.tensor(targets)
    probs = torch.softmax(logits_t, dim=1)
    losses = torch.nn.functional.cross_entropy(logits_t, targets_t, reduction="none")
    classes = [f"class_{i}" for i in range(num_classes)]
    metrics = compute_metrics(probs, targets_t, losses, classes)
    table = ResultsTable.from_probabilities(
        classes, [f"img_{i:05d}.png" for i in range(n)], ["test"] * n, targets, probs.numpy(), losses.numpy()
    )
    table.save(tmp_path / "results.npz")
    return metrics, ResultsTable.load(tmp_path / "results.npz"), probs.numpy(), targets


def test_metrics_match_numpy_recomputation_from_stored_results(tmp_path: Path) -> None:
    metrics, stored, _, _ = _evaluate(num_classes=8, n=600, seed=1, tmp_path=tmp_path)
    assert_metrics_match_reference(metrics, stored)
    assert 0.0 < metrics["accuracy"] < 1.0
    assert metrics["top5_accuracy"] >= metrics["accuracy"]


def test_class_never_predicted_has_zero_precision_and_counts_in_macro(tmp_path: Path) -> None:
    metrics, stored, _, _ = _evaluate(num_classes=4, n=200, seed=2, tmp_path=tmp_path, never_predicted=3)
    assert metrics["per_class"]["class_3"]["precision"] == 0.0
    assert metrics["per_class"]["class_3"]["support"] > 0
    assert_metrics_match_reference(metrics, stored)


def test_top5_accuracy_only_with_more_than_five_classes(tmp_path: Path) -> None:
    five, _, _, _ = _evaluate(num_classes=5, n=50, seed=3, tmp_path=tmp_path)
    six, _, _, _ = _evaluate(num_classes=6, n=50, seed=3, tmp_path=tmp_path)
    assert "top5_accuracy" not in five
    assert "top5_accuracy" in six


def test_curves_are_downsampled_and_ap_matches_numpy(tmp_path: Path) -> None:
    metrics, _, probs, targets = _evaluate(num_classes=3, n=900, seed=4, tmp_path=tmp_path)
    for i, name in enumerate(["class_0", "class_1", "class_2"]):
        curve = metrics["curves"][name]
        assert 2 <= len(curve["pr"]["precision"]) <= MAX_CURVE_POINTS
        assert len(curve["pr"]["precision"]) == len(curve["pr"]["recall"])
        assert len(curve["roc"]["fpr"]) == len(curve["roc"]["tpr"]) <= MAX_CURVE_POINTS
        assert curve["roc"]["fpr"][0] == 0.0 and curve["roc"]["tpr"][-1] == 1.0
        # AP = sum over positives ranked by score of precision at that rank / number of positives
        positive = targets == i
        order = np.argsort(-probs[:, i], kind="stable")
        hits = positive[order]
        precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
        assert abs(metrics["per_class"][name]["ap"] - precision_at_hit.mean()) < 1e-4


def test_class_without_samples_has_null_ap_and_the_json_stays_valid(tmp_path: Path) -> None:
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 2.0, 0.0]])
    targets = torch.tensor([0, 1, 1])
    probs = torch.softmax(logits, 1)
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    metrics = compute_metrics(probs, targets, losses, ["a", "b", "c"])
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "ap": None}
    assert metrics["curves"]["c"]["roc"]["tpr"] == []
    text = json.dumps(metrics, allow_nan=False)  # raises on NaN / Infinity
    assert json.loads(text)["accuracy"] == 1.0


def test_downsample_keeps_both_ends_and_at_most_the_limit() -> None:
    xs = np.linspace(0, 1, 5000)
    ds_x, ds_y = downsample_curve(xs, xs**2)
    assert len(ds_x) == MAX_CURVE_POINTS
    assert ds_x[0] == 0.0 and ds_x[-1] == 1.0 and ds_y[-1] == 1.0
    short_x, _ = downsample_curve(xs[:10], xs[:10])
    assert len(short_x) == 10
