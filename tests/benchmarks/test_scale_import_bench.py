"""The import-append benchmark runs end to end on a tiny dataset: both sides import, write the same bytes, report memory.

It runs as ``python -m benchmarks.scale_import_bench`` from the repository root (``benchmarks`` is not a package the
tests import), so a change to the import's services shows up here rather than in the next 1M-image run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_import_append_times_both_sides_and_they_write_the_same_file(tmp_path: Path) -> None:
    completed = subprocess.run([sys.executable, "-m", "benchmarks.scale_import_bench", str(tmp_path), "300", "6"],
                               cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout)
    assert result["images"] == 300 and result["added"] == 6
    assert result["same_bytes"] is True
    for side in ("whole", "streamed", "streamed_no_index"):
        assert result[f"{side}_s"] > 0
    for side in ("whole", "streamed"):
        assert result[f"rss_{side}_peak_bytes"] >= result[f"rss_{side}_before_bytes"] > 0
