"""The prediction benchmark rows run end to end in quick mode and report both sides; no timing is ever asserted.

They depend on the predict endpoints' paths and field names (DESIGN section
12) and on a real trained checkpoint, so a change to either shows up here
rather than as a failed row in the next ``make bench``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tests.helpers.bench import run_quick_rows

ROWS = ["predict_http_vs_inprocess_b1", "predict_batching_throughput"]


def _check_side(side: dict[str, Any]) -> None:
    assert side["label"] and side["unit"]
    assert side["values"] and all(isinstance(v, float) and v > 0 and math.isfinite(v) for v in side["values"])


def test_quick_prediction_rows_report_both_sides_on_one_trained_model(tmp_path: Path) -> None:
    report, printed = run_quick_rows(ROWS, tmp_path / "report.json")
    assert report["failed"] == [] and report["skipped"] == []
    measured = {row["id"]: row for row in report["results"]}
    assert set(measured) == set(ROWS)
    for row in measured.values():
        assert row["ratio_kind"] == "ours/against" and row["ratio"] > 0 and isinstance(row["met"], bool)
        _check_side(row["ours"])
        _check_side(row["against"])
        assert row["extra"]["arch"] == "simple_cnn"  # quick mode's model
        assert row["id"] in printed
    latency = measured["predict_http_vs_inprocess_b1"]
    assert latency["higher_is_better"] is False
    assert latency["extra"]["max_confidence_diff"] < 1e-5  # HTTP answered what the in-process call answered
    throughput = measured["predict_batching_throughput"]
    assert throughput["higher_is_better"] is True
    assert throughput["extra"]["batched_mean_batch"] == throughput["extra"]["clients"]  # full batches on that side
