"""Side-by-side measurement: run two variants interleaved (A B A B ...), take medians.

Timing both sides in one process, alternating, cancels most drift (thermal,
other load, caches) that separate runs would turn into a fake ratio. Each
benchmark states what it compares so a reader can re-run it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Side:
    """One side of a comparison: its label, the unit and every repeat's value."""

    label: str
    unit: str
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """Relative spread (max - min) / median, a quick noise indicator."""
        if not self.values or self.median == 0:
            return 0.0
        return (max(self.values) - min(self.values)) / abs(self.median)


@dataclass
class Result:
    id: str
    compares: str
    ours: Side
    against: Side | None
    #: how the ratio is formed: "ours/against" for throughputs, "against/ours" for times, "absolute" for one side
    ratio_kind: str
    target: str
    target_value: float
    higher_is_better: bool
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: an absolute bound the ours median must also stay under (e.g. "<= 3x and < 50 ms"), in ``ours.unit``
    ours_limit: float | None = None

    @property
    def ratio(self) -> float:
        if self.ratio_kind == "absolute" or self.against is None:
            return self.ours.median
        if self.ratio_kind == "ours/against":
            return self.ours.median / self.against.median
        return self.against.median / self.ours.median

    @property
    def met(self) -> bool:
        if self.ours_limit is not None and not self.ours.median < self.ours_limit:
            return False
        return self.ratio >= self.target_value if self.higher_is_better else self.ratio <= self.target_value

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ours"]["median"] = self.ours.median
        data["ours"]["spread"] = self.ours.spread
        if self.against is not None:
            data["against"]["median"] = self.against.median
            data["against"]["spread"] = self.against.spread
        data["ratio"] = self.ratio
        data["met"] = self.met
        data["repeats"] = len(self.ours.values)
        return data


def interleave(ours: Callable[[], float], against: Callable[[], float], repeats: int) -> tuple[list[float], list[float]]:
    """Call ``ours`` and ``against`` alternately ``repeats`` times each (order flipped every round)."""
    a_values: list[float] = []
    b_values: list[float] = []
    for round_index in range(repeats):
        if round_index % 2 == 0:
            a_values.append(ours())
            b_values.append(against())
        else:
            b_values.append(against())
            a_values.append(ours())
    return a_values, b_values


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def throughput(step: Callable[[], Any], items_per_step: int, min_seconds: float) -> float:
    """Items per second of ``step`` called repeatedly for at least ``min_seconds`` (at least once).

    Short steps are repeated so timer resolution and per-call jitter do not
    dominate; long steps are timed once.
    """
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return count * items_per_step / elapsed


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            info["mem_total_kb"] = int(handle.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    for dist in ("torch", "torchvision", "lightning", "onnxruntime", "onnx", "litestar", "uvicorn", "pillow", "numpy"):
        try:  # distribution metadata: always a plain string (litestar's __version__ is a tuple)
            info[f"{dist}_version"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # an optional package missing is worth recording, not failing on
            info[f"{dist}_version"] = "not installed"
    try:
        info["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        import torch

        info["cuda_available"] = bool(torch.cuda.is_available())
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["cuda_available"] = False
    import modelyard

    info["modelyard_version"] = modelyard.__version__
    return info


def format_table(results: list[Result]) -> str:
    header = f"{'id':<28} {'ratio':>8} {'target':>10} {'met':>4}  {'ours (median)':>22}  {'against (median)':>22}"
    lines = [header, "-" * len(header)]
    for r in results:
        ours = f"{r.ours.median:.4g} {r.ours.unit}"
        against = f"{r.against.median:.4g} {r.against.unit}" if r.against else "-"
        lines.append(f"{r.id:<28} {r.ratio:>8.3f} {r.target:>10} {'yes' if r.met else 'NO':>4}  {ours:>22}  {against:>22}")
    return "\n".join(lines)


def write_report(results: list[Result], path: Path, quick: bool, skipped: list[dict[str, str]],
                 failed: list[dict[str, str]] | None = None, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the JSON report atomically; ``failed`` lists measurements that raised, ``run`` how the run was made."""
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "machine": machine_info(),
        "results": [r.to_json() for r in results],
        "skipped": skipped,
        "failed": failed or [],
        "run": run or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return report
