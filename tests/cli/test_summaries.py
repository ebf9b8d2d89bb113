"""What the CLI prints after a pipeline or an export: each task's own numbers (cli/pipeline.py, cli/jobs.py)."""

from __future__ import annotations

from modelyard.cli.jobs import verification_text
from modelyard.cli.pipeline import summary

BOX_VERIFICATION = {"images": 64, "passed": True, "score_threshold": 0.5, "boxes": 127, "matched": 127, "excused": 0,
                    "min_iou": 0.99998, "iou_required": 0.99, "count_mismatches": 0, "label_mismatches": 0}


def test_a_detection_export_is_described_by_its_boxes() -> None:
    assert verification_text(BOX_VERIFICATION) == \
        "verified (127 of 127 boxes matched, min IoU 1.0000, at score 0.5 on 64 image(s))"
    failed = {**BOX_VERIFICATION, "passed": False, "matched": 120, "min_iou": None}
    assert verification_text(failed).startswith("NOT verified (120 of 127 boxes matched, min IoU n/a")


def test_a_classification_export_is_described_by_its_logits() -> None:
    text = verification_text({"passed": True, "max_abs_diff": 1.5e-6, "top1_agreement": 1.0, "images": 12})
    assert text == "verified (max abs diff 1.50e-06, top-1 agreement 100.0% on 12 image(s))"


def test_a_detection_pipeline_summary_shows_map_precision_recall_and_per_class_ap() -> None:
    result = {
        "status": "completed",
        "duration_s": 90.0,
        "project": {"name": "boxes", "id": "proj-00000000", "created": True},
        "dataset": {"num_images": 1000, "classes": ["circle", "star"], "action": "imported", "fingerprint": "0" * 64},
        "split": {"index": 0, "name": "main", "stats": {"train": 800, "val": 100, "test": 100}, "reused": False,
                  "assignment_hash": "1" * 64},
        "evaluation": {"subsets": ["test"], "num_images": 100, "checkpoint": "best", "map": 0.78, "map_50": 0.97,
                       "precision": 0.95, "recall": None, "score_threshold": 0.5,
                       "per_class_ap": {"circle": 0.84, "star": None}},
        "exports": [{"format": "onnx", "status": "completed", "verification": BOX_VERIFICATION, "file": "/x.onnx"}],
    }
    text = summary(result)
    assert "mAP@.5 0.9700   mAP@[.5:.95] 0.7800   precision 0.9500   recall n/a   (boxes scoring >= 0.5)" in text
    assert "  circle                 0.8400" in text and "  star                      n/a" in text
    assert "accuracy" not in text and "127 of 127 boxes matched" in text
