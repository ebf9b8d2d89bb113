"""Training data at ImageNet scale (issue 19): what a training worker pays to get a split's samples, old way and new.

A synthetic classification ``dataset.json`` (``scale_bench.write_synthetic``:
ten classes, ~5 % unlabelled) gets a split made through the real service
(``services.splits.create``, 0.8/0.1/0.1), which also leaves the index cache
beside the file. Then, each in a fresh interpreter, so its peak resident
memory (``VmHWM``) is its own and not a parent's:

* ``old``: ``read_json(dataset.json)`` and the dict-per-image ``split_items``
  (the code the runtimes used before, kept as the test oracle) for train and val;
* ``new``: ``load_dataset_view`` (the warm ``.dataset.index``, as every worker
  and DDP rank loads it) and the classification runtime's ``samples`` for
  train and val, read from the columns.

Both processes import the runtime (and torch) before the clock starts, so
``rss_baseline_bytes`` is the same start for both. The two must produce the
same items (``items_sha256``). Run: ``python -m benchmarks.scale_train_bench WORKDIR COUNT``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.scale_bench import ROOT, _status_bytes, write_synthetic

IMAGE_SIZE = (64, 64)


def bench_train_samples(workdir: Path, count: int, repeats: int = 1) -> dict[str, Any]:
    """Seconds and peak RSS of the old and the new way to a split's train and val samples (module docstring)."""
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    services = build_services(Settings(workspace=Path(workdir) / "ws"))
    project = services.projects.create("bench-train-samples").id
    dataset_json = services.workspace.dataset_json(project)
    started = time.perf_counter()
    write_synthetic(dataset_json, count)
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    split_index = services.splits.create(project, "bench-80-10-10", Ratios(0.8, 0.1, 0.1), seed=0)["split_index"]
    split_s = time.perf_counter() - started
    _cache_on_disk(dataset_json)
    runs = {mode: [_child(mode, dataset_json, split_index) for _ in range(repeats)] for mode in ("old", "new")}
    digests = {run["items_sha256"] for mode_runs in runs.values() for run in mode_runs}
    if len(digests) != 1:
        raise AssertionError(f"the old and the new way gave different samples: {runs}")
    return {"images": count, "dataset_json_bytes": dataset_json.stat().st_size, "generate_s": generate_s,
            "split_create_s": split_s, "split_index": split_index, **runs}


def _cache_on_disk(dataset_json: Path) -> None:
    """Make sure ``.dataset.index`` of the current file is written, so the ``new`` side maps it (warm)."""
    from modelyard.core.datasets import index_cache
    from modelyard.core.datasets.index import IndexCache

    assert IndexCache().get(dataset_json) is not None
    flush = getattr(index_cache, "flush", None)  # where the cache is written behind the build, wait for it
    if flush is not None:
        flush(timeout=300)
    if not index_cache.cache_path(dataset_json).is_file():
        raise RuntimeError("the index cache was not written beside dataset.json")


def _child(mode: str, dataset_json: Path, split_index: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_train_bench", "--child", mode, str(dataset_json), str(split_index)],
        cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the {mode} side failed: {completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def child_main(mode: str, dataset_json: Path, split_index: int) -> dict[str, Any]:
    """In a fresh interpreter: one side's load and train + val samples, timed, with this process's peak RSS."""
    from modelyard.core.datasets.view import load_dataset_view
    from modelyard.core.jsonio import read_json
    from modelyard.plugins.classification import CLASSIFICATION
    from modelyard.plugins.classification.runtime import ClassificationRuntime
    from tests.core.datasets.reference_samples import split_items

    runtime = ClassificationRuntime(CLASSIFICATION)
    baseline = _status_bytes("VmRSS")
    started = time.perf_counter()
    if mode == "old":
        dataset: Any = read_json(dataset_json)
        loaded = time.perf_counter()
        train, val = (split_items(dataset, split_index, subset) for subset in ("train", "val"))
    else:
        dataset = load_dataset_view(dataset_json, "classification")
        loaded = time.perf_counter()
        train, val = (runtime.samples(dataset, split_index, subset, IMAGE_SIZE) for subset in ("train", "val"))
    done = time.perf_counter()
    digest = hashlib.sha256(json.dumps([train, val]).encode("utf-8")).hexdigest()
    return {"load_s": loaded - started, "samples_s": done - loaded, "total_s": done - started, "train": len(train),
            "val": len(val), "items_sha256": digest, "rss_baseline_bytes": baseline,
            "rss_peak_bytes": _status_bytes("VmHWM"), "rss_after_bytes": _status_bytes("VmRSS")}


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        print(json.dumps(child_main(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))))
    else:
        print(json.dumps(bench_train_samples(Path(sys.argv[1]), int(sys.argv[2])), indent=2))
