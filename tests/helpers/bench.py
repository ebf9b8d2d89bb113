"""Run the benchmark harness in quick mode in a subprocess, as ``make bench-quick`` would, and read its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_quick_rows(rows: list[str], out: Path, timeout: float = 240) -> tuple[dict[str, Any], str]:
    """``python -m benchmarks --quick --threads 1 --only ROWS``: the report and the printed table, once it succeeded."""
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--threads", "1", "--out", str(out), "--only", *rows],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8")), completed.stdout
