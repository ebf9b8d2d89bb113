"""Detection evaluation (plugins/object_detection/evaluation.py, results.py): matching, metrics, browsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modelyard.core.errors import CorruptDataError
from modelyard.core.evaluation.index import ResultsIndex, ResultsQuery
from modelyard.plugins.object_detection.evaluation import evaluate_detections, iou_matrix, match_image
from modelyard.plugins.object_detection.results import DetectionResultsTable

CLASSES = ["circle", "square"]


def _target(boxes: list[list[float]], labels: list[int], scale: tuple[float, float] = (1.0, 1.0)) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), "source_scale": scale}


def _output(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {"boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4), "scores": np.asarray(scores, dtype=np.float32),
            "labels": np.asarray(labels, dtype=np.int64)}


def test_iou_of_identical_disjoint_and_half_overlapping_boxes() -> None:
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]], dtype=np.float32)
    assert iou_matrix(a, b)[0].tolist() == pytest.approx([1.0, 0.0, 50 / 150])


def test_matching_prefers_the_same_class_then_records_a_confusion_then_background() -> None:
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    gt_labels = np.array([0, 1])
    preds = np.array([[0, 0, 10, 9], [20, 20, 30, 30], [50, 50, 60, 60]], dtype=np.float32)
    pred_labels = np.array([0, 0, 1])  # right, wrong class on box 1, nothing there
    pred_match, pred_iou, gt_match = match_image(preds, pred_labels, gt_boxes, gt_labels)
    assert pred_match.tolist() == [0, 1, -1]
    assert pred_iou[0] == pytest.approx(0.9) and pred_iou[1] == pytest.approx(1.0) and pred_iou[2] == 0.0
    assert gt_match.tolist() == [0, 1]


def _evaluated(threshold: float = 0.5) -> tuple[dict, DetectionResultsTable]:
    items = [
        ("a.png", "test", _target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], scale=(2.0, 2.0))),
        ("b.png", "test", _target([[5, 5, 15, 15]], [1])),
        ("c.png", "test", _target([], [])),  # a background image
    ]
    outputs = [
        _output([[0, 0, 10, 10], [20, 20, 30, 30]], [0.9, 0.8], [0, 1]),  # both right
        _output([[5, 5, 15, 15], [40, 40, 50, 50]], [0.7, 0.3], [0, 1]),  # wrong class; a low-score box
        _output([[1, 1, 5, 5]], [0.6], [1]),  # a box on the background
    ]
    return evaluate_detections(items, outputs, CLASSES, threshold)


def test_metrics_count_boxes_at_the_threshold_and_map_over_every_prediction() -> None:
    metrics, _ = _evaluated()
    assert metrics["num_images"] == 3
    # at 0.5: TP circle@a, TP square@a; b: a circle on a square (FP + FN); c: a square on nothing (FP)
    assert metrics["precision"] == pytest.approx(2 / 4) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["confusion_matrix"] == {"labels": ["circle", "square", "background"],
                                           "matrix": [[1, 0, 0], [1, 1, 0], [0, 1, 0]]}
    assert metrics["per_class"]["circle"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3),
                                              "support": 1, "ap": metrics["per_class_ap"]["circle"]}
    assert metrics["per_class"]["square"]["recall"] == 0.5 and metrics["per_class"]["square"]["support"] == 2
    assert 0.0 < metrics["map_50"] <= 1.0 and 0.0 < metrics["map"] <= metrics["map_50"]
    assert metrics["score_threshold"] == 0.5 and metrics["iou_threshold"] == 0.5


def test_perfect_predictions_have_map_one() -> None:
    items = [("a.png", "test", _target([[0, 0, 10, 10], [20, 20, 40, 30]], [0, 1]))]
    outputs = [_output([[0, 0, 10, 10], [20, 20, 40, 30]], [0.9, 0.8], [0, 1])]
    metrics, table = evaluate_detections(items, outputs, CLASSES)
    assert metrics["map"] == pytest.approx(1.0) and metrics["map_50"] == pytest.approx(1.0)
    assert metrics["per_class_ap"] == {"circle": pytest.approx(1.0), "square": pytest.approx(1.0)}
    assert table.correct.tolist() == [True]


def test_rows_show_boxes_in_stored_image_pixels_and_every_match(tmp_path: Path) -> None:
    _, table = _evaluated()
    table.save(tmp_path / "results.npz")
    loaded = DetectionResultsTable.load(tmp_path / "results.npz")
    first = loaded.row(0)
    assert first["ground_truth"][1] == {"class_id": 1, "class_name": "square", "bbox": [40.0, 40.0, 20.0, 20.0]}
    assert first["predictions"][0]["score"] == pytest.approx(0.9) and first["correct"] is True
    assert [m["type"] for m in first["matches"]] == ["TP", "TP"] and first["matches"][0]["iou"] == pytest.approx(1.0)
    second = loaded.row(1)
    assert len(second["predictions"]) == 1  # the 0.3 box is below the threshold
    assert second["matches"] == [{"type": "FP", "prediction": 0, "ground_truth": 0, "iou": pytest.approx(1.0)},
                                 {"type": "FN", "prediction": None, "ground_truth": 0, "iou": None}]
    assert (second["tp"], second["fp"], second["fn"]) == (0, 1, 1)
    third = loaded.row(2)
    assert third["ground_truth"] == [] and (third["fp"], third["correct"]) == (1, False)


def test_results_sort_by_errors_and_filter_by_class_and_errors() -> None:
    _, table = _evaluated()
    index = ResultsIndex(table)
    rows, total = index.query(ResultsQuery(sort_by="error"))
    assert [r["filename"] for r in rows] == ["b.png", "c.png", "a.png"] and total == 3
    rows, total = index.query(ResultsQuery(filter_correct=False))
    assert [r["filename"] for r in rows] == ["b.png", "c.png"]
    rows, _ = index.query(ResultsQuery(filter_class="square"))  # any true square
    assert [r["filename"] for r in rows] == ["a.png", "b.png"]
    rows, _ = index.query(ResultsQuery(filter_predicted="square"))  # any predicted square at the threshold
    assert [r["filename"] for r in rows] == ["a.png", "c.png"]
    rows, _ = index.query(ResultsQuery(sort_by="confidence"))
    assert [r["filename"] for r in rows] == ["a.png", "b.png", "c.png"]


def test_a_tampered_results_file_is_corrupt_data(tmp_path: Path) -> None:
    _, table = _evaluated()
    table.gt_offsets = table.gt_offsets + 1
    table.save(tmp_path / "results.npz")
    with pytest.raises(CorruptDataError):
        DetectionResultsTable.load(tmp_path / "results.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CorruptDataError):
        DetectionResultsTable.load(tmp_path / "junk.npz")
