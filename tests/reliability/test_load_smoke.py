"""The load test's smoke version (5 s, 5 clients, 2 SSE subscribers) against a real server: zero errors.

No timing is asserted (this machine is shared); the full run is ``make load``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_test.py"


def _load_test_module() -> ModuleType:
    """``benchmarks/load_test.py`` by path (``benchmarks`` is a folder of scripts, not an installed package)."""
    spec = importlib.util.spec_from_file_location("modelyard_benchmarks_load_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_load_smoke_has_zero_errors_and_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    assert _load_test_module().main(["--smoke", "--no-pin", "--out", str(out)]) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["errors"] == 0, report["http"]["error_samples"]
    assert set(report["http"]["by_endpoint"]) == {"list_projects", "list_images", "image", "thumbnail"}
    for row in [report["http"]["overall"], *report["http"]["by_endpoint"].values()]:
        assert row["requests"] > 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert report["sse"]["errors"] == 0
    assert len(report["sse"]["events_per_subscriber"]) == 2
    assert all(count > 0 for count in report["sse"]["events_per_subscriber"])
    assert report["server_rss"]["during_load"]["samples"] >= 3
    assert report["training"]["during_load"]["epochs"] >= 0
    assert {"before", "after", "degradation_pct", "baseline_images_per_s"} <= set(report["training"])
