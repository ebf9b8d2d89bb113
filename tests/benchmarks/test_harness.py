"""The benchmark harness runs end to end and writes a well-formed report; no timing is ever asserted.

``benchmarks/`` is a folder of scripts run from the repository root
(``python -m benchmarks``), not an installed package, so the end-to-end test
runs it exactly that way, and the unit tests put the root on ``sys.path``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.bench import ROOT, run_quick_rows

import pytest

#: one row of each kind that is cheap in quick mode: a loader ratio, one of the two HTTP rows, a
#: seconds-based ratio, and a GPU row (skipped without CUDA; skipped with a reason on a GPU too)
SUBSET = ["loader_draft_decode", "list_last_vs_first_page", "import_10k", "train_gpu_engine_vs_plain_optimised"]


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks.harness

    return benchmarks.harness


def _check_side(side: dict[str, Any]) -> None:
    assert side["label"] and side["unit"]
    assert side["values"] and all(isinstance(v, float) and v > 0 and math.isfinite(v) for v in side["values"])
    assert min(side["values"]) <= side["median"] <= max(side["values"])
    assert side["spread"] >= 0


def test_quick_harness_writes_a_well_formed_report_for_the_selected_rows(tmp_path: Path) -> None:
    report, printed = run_quick_rows(SUBSET, tmp_path / "report.json")

    assert {"generated_at", "quick", "machine", "results", "skipped", "failed", "run"} <= set(report)
    assert report["quick"] is True
    assert report["failed"] == []
    assert {"python", "cpu_count", "torch_version", "cuda_available", "torch_threads"} <= set(report["machine"])
    assert report["machine"]["torch_threads"] == 1
    assert report["run"]["threads"] == 1 and report["run"]["elapsed_s"] > 0

    measured = {row["id"]: row for row in report["results"]}
    skipped = {row["id"]: row["reason"] for row in report["skipped"]}
    assert set(measured) | set(skipped) == set(SUBSET)  # every row accounted for, nothing unrequested
    assert not set(measured) & set(skipped)
    assert all(reason.strip() for reason in skipped.values())
    assert "train_gpu_engine_vs_plain_optimised" in skipped
    assert {"loader_draft_decode", "list_last_vs_first_page", "import_10k"} <= set(measured)
    for row in measured.values():
        assert row["compares"].strip() and row["target"].strip()
        assert row["ratio_kind"] in ("ours/against", "against/ours", "absolute")
        assert isinstance(row["met"], bool)
        assert row["ratio"] > 0 and math.isfinite(row["ratio"])
        _check_side(row["ours"])
        assert row["repeats"] == len(row["ours"]["values"])
        if row["ratio_kind"] != "absolute":
            _check_side(row["against"])
        assert row["id"] in printed  # the printed table has the row too


def test_unknown_benchmark_id_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out), "--only", "no_such_benchmark"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 2
    assert "no_such_benchmark" in completed.stderr
    assert not out.exists()


def test_interleave_alternates_which_side_runs_first(harness: Any) -> None:
    calls: list[str] = []
    ours, against = harness.interleave(lambda: calls.append("A") or 1.0, lambda: calls.append("B") or 2.0, 4)
    assert calls == ["A", "B", "B", "A", "A", "B", "B", "A"]
    assert ours == [1.0] * 4 and against == [2.0] * 4


def test_latency_ratio_is_missed_when_the_absolute_limit_is_exceeded(harness: Any) -> None:
    def latency(ours_ms: list[float], against_ms: list[float]) -> Any:
        return harness.Result(
            id="x", compares="page vs constant", ours=harness.Side("page", "ms", ours_ms),
            against=harness.Side("constant", "ms", against_ms), ratio_kind="ours/against", target="<= 3x, < 50 ms",
            target_value=3.0, higher_is_better=False, ours_limit=50.0,
        )

    assert latency([2.0, 2.2, 2.4], [1.0, 1.0, 1.0]).met
    assert not latency([4.0, 4.0, 4.0], [1.0, 1.0, 1.0]).met  # ratio 4 > 3
    assert not latency([60.0, 61.0, 62.0], [30.0, 30.0, 30.0]).met  # ratio 2 but 61 ms is over the 50 ms bound


def test_time_ratio_is_against_over_ours_and_must_reach_the_target(harness: Any) -> None:
    result = harness.Result(
        id="x", compares="import vs bare loop", ours=harness.Side("import", "s", [4.0, 5.0, 6.0]),
        against=harness.Side("bare", "s", [2.0, 2.5, 3.0]), ratio_kind="against/ours", target=">= 0.5x",
        target_value=0.5, higher_is_better=True,
    )
    assert result.ratio == pytest.approx(0.5)
    assert result.met
    assert result.to_json()["repeats"] == 3


def test_gpu_training_comparison_runs_its_code_path_on_the_cpu(harness: Any) -> None:
    import torch

    from benchmarks.gpu_bench import bench_optimised_vs_fp32

    result = bench_optimised_vs_fp32(torch.device("cpu"), arch="simple_cnn", image_px=16, batch=4, steps=2, repeats=2,
                                     compile_model=False, num_classes=3)
    assert result.id == "train_gpu_resnet18_224_optimised"
    assert "bf16 + channels_last" in result.compares and "cpu" in result.compares
    assert len(result.ours.values) == 2 and all(v > 0 for v in result.ours.values)
    assert result.against is not None and all(v > 0 for v in result.against.values)
