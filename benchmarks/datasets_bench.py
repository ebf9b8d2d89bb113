"""Dataset benchmarks (issue 4): import throughput against a bare loop, and page latency at 100,000 images.

``bench_import_10k`` imports 10,000 small generated images through the real
service and, interleaved with it on the same files, runs the bare loop a
hand-written script would (copy each file, open it with Pillow, decode it);
both are repeated A B A B and the medians compared.

``bench_list_images`` writes a 100,000-image ``dataset.json`` directly and
times one page of 50 through the service and its index, for every sort and
filter combination, first and last page, both the first request of a
combination (filtering done) and a repeated one (served from the index's LRU).

Run: ``.venv/bin/python benchmarks/datasets_bench.py [--out report.json] [--workdir DIR]``.
A benchmark, not a test: it prints a table and writes JSON; nothing fails on its numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from modelyard.core.jsonio import atomic_write_json
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings

NUM_IMPORT_IMAGES = 10_000
NUM_LIST_IMAGES = 100_000
CLASSES = [f"class_{i:02d}" for i in range(10)]


# -- import ----------------------------------------------------------------------

def _generate_images(root: Path, count: int, size: int = 32, seed: int = 0) -> list[Path]:
    """``count`` distinct noise PNGs (``size`` px), one folder per class."""
    rng = random.Random(seed)
    paths = []
    for i in range(count):
        folder = root / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:05d}.png"
        Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3)).save(path, format="PNG")
        paths.append(path)
    return paths


def _bare_loop(paths: list[Path], dest: Path, decode: bool) -> Callable[[], None]:
    """What a hand-written import does at the least: copy every file, open it with Pillow (and decode it)."""
    dest.mkdir(parents=True)
    for i, path in enumerate(paths):
        target = dest / f"{i:05d}_{path.name}"
        shutil.copyfile(path, target)
        with Image.open(target) as image:
            if decode:
                image.load()
    return lambda: shutil.rmtree(dest)


def _ours(services: Services, root: Path, count: int = NUM_IMPORT_IMAGES) -> Callable[[], None]:
    project = services.projects.create("bench").id
    summary = services.datasets.import_local(project, str(root))
    assert summary["imported"] == count, summary["imported"]
    return lambda: services.projects.delete(project)


def bench_import_10k(workdir: Path, repeats: int = 3, count: int = NUM_IMPORT_IMAGES) -> dict[str, Any]:
    """Median seconds of our import vs the bare loop over the same ``count`` (10,000) images, interleaved A B A B."""
    workdir = Path(workdir)
    source = workdir / "import_source" / "images"
    paths = _generate_images(source, count)
    services = build_services(Settings(workspace=workdir / "import_ws", import_roots=[source.parent]))
    timings: dict[str, list[float]] = {"ours": [], "bare_copy_open_decode": [], "bare_copy_open": []}
    runs = {
        "ours": lambda n: _ours(services, source, count),
        "bare_copy_open_decode": lambda n: _bare_loop(paths, workdir / f"bare_decode_{n}", decode=True),
        "bare_copy_open": lambda n: _bare_loop(paths, workdir / f"bare_open_{n}", decode=False),
    }
    for name, run in runs.items():  # warm the page cache and imports once, untimed
        run("warm")()
    for n in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            cleanup = run(n)
            timings[name].append(time.perf_counter() - started)
            cleanup()  # untimed
    medians = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "images": count,
        "image_size_px": 32,
        "repeats": repeats,
        "median_s": medians,
        "all_s": timings,
        "ratio_vs_copy_open_decode": medians["ours"] / medians["bare_copy_open_decode"],
        "ratio_vs_copy_open": medians["ours"] / medians["bare_copy_open"],
        # each repeat's A/B ratio (neighbours in time), robust to a machine whose load drifts
        "paired_ratios_vs_copy_open_decode": [a / b for a, b in zip(timings["ours"], timings["bare_copy_open_decode"])],
        "median_paired_ratio_vs_copy_open_decode": statistics.median(
            a / b for a, b in zip(timings["ours"], timings["bare_copy_open_decode"])
        ),
        "images_per_s": count / medians["ours"],
    }


# -- listing ---------------------------------------------------------------------

#: The filter combinations of the listing benchmarks (query parameters of ``GET .../images``).
LIST_FILTERS: dict[str, dict[str, str]] = {
    "none": {},
    "class": {"filter_class": "class_03"},
    "split": {"filter_split": "0:val"},
    "search": {"search": "_0"},
    "class+split+search": {"filter_class": "class_07", "filter_split": "1:train", "search": "7"},
}
#: Every ``(sort_by, sort_order)`` of the listing.
LIST_SORTS: list[tuple[str, str]] = list(itertools.product(["filename", "class", "size"], ["asc", "desc"]))


def _synthetic_dataset(count: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    images = []
    for i in range(count):
        label = CLASSES[rng.randrange(len(CLASSES))] if rng.random() > 0.05 else None
        images.append({
            "filename": f"{label or 'unlabelled'}_{i:06d}.jpg", "width": 64, "height": 48, "size": rng.randrange(1000, 90000),
            "format": "jpeg", "sha256": f"{i:064x}", "source_path": f"{label}/{i:06d}.jpg",
            "split": [rng.choice(["train", "train", "train", "val", "test"]), rng.choice(["train", "val", "none"])],
            "annotations": [] if label is None else [{"type": "label", "class_id": CLASSES.index(label), "class_name": label}],
        })
    return {"version": 1, "task": "classification", "source": {"kind": "local", "format": "imagefolder",
                                                               "imported_at": "2026-01-01T00:00:00Z"},
            "classes": CLASSES, "split_names": ["80-10-10", "other"], "image_stats": {}, "images": images}


def bench_list_images(workdir: Path) -> dict[str, Any]:
    """Latency (ms) of one page of 50 at 100,000 images for every sort/filter combination, through the service."""
    workdir = Path(workdir)
    services = build_services(Settings(workspace=workdir / "list_ws"))
    project = services.projects.create("bench").id
    atomic_write_json(services.workspace.dataset_json(project), _synthetic_dataset(NUM_LIST_IMAGES))
    started = time.perf_counter()
    services.datasets.list_images(project)
    build_ms = (time.perf_counter() - started) * 1000
    rows = []
    for (sort_by, order), (filter_name, params) in itertools.product(LIST_SORTS, LIST_FILTERS.items()):
        first = services.datasets.list_images(project, page=1, page_size=50, sort_by=sort_by, sort_order=order, **params)
        last_page = max(1, first["pages"])
        timings = {}
        for label, page in (("last_page_first_request", last_page), ("first_page_repeat", 1), ("last_page_repeat", last_page)):
            if label == "last_page_first_request":
                _clear_lru(services, project)
            t0 = time.perf_counter()
            services.datasets.list_images(project, page=page, page_size=50, sort_by=sort_by, sort_order=order, **params)
            timings[label] = (time.perf_counter() - t0) * 1000
        rows.append({"sort_by": sort_by, "sort_order": order, "filter": filter_name, "total": first["total"], **timings})
    worst = max(rows, key=lambda r: r["last_page_first_request"])
    return {
        "images": NUM_LIST_IMAGES,
        "page_size": 50,
        "index_build_ms": build_ms,
        "worst_first_request_ms": worst["last_page_first_request"],
        "worst_combination": {k: worst[k] for k in ("sort_by", "sort_order", "filter")},
        "worst_repeat_ms": max(max(r["first_page_repeat"], r["last_page_repeat"]) for r in rows),
        "rows": rows,
    }


def _clear_lru(services: Services, project: str) -> None:
    """Forget cached selections so the next request filters and sorts from scratch (the worst case)."""
    index = services.datasets.store.index(project)
    with index._lru_lock:  # benchmark-only peek at the cache
        index._lru.clear()


# -- report ----------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("datasets_bench.json"))
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp folder, removed)")
    parser.add_argument("--only", choices=["import", "list"], default=None)
    parser.add_argument("--repeats", type=int, default=3, help="A B A B repetitions of the import benchmark")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    report: dict[str, Any] = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        if args.only in (None, "import"):
            report["import_10k"] = result = bench_import_10k(workdir / "import", repeats=args.repeats)
            print(f"import 10k: ours {result['median_s']['ours']:.2f} s, bare copy+open+decode "
                  f"{result['median_s']['bare_copy_open_decode']:.2f} s (ratio {result['ratio_vs_copy_open_decode']:.2f}), "
                  f"bare copy+open {result['median_s']['bare_copy_open']:.2f} s (ratio {result['ratio_vs_copy_open']:.2f}); "
                  f"median paired ratio {result['median_paired_ratio_vs_copy_open_decode']:.2f}")
        if args.only in (None, "list"):
            report["list_images_100k"] = listing = bench_list_images(workdir / "list")
            print(f"list 100k: index build {listing['index_build_ms']:.0f} ms; page of 50: worst first request "
                  f"{listing['worst_first_request_ms']:.1f} ms ({listing['worst_combination']}), worst repeat "
                  f"{listing['worst_repeat_ms']:.2f} ms")
            print(f"{'sort':10} {'order':5} {'filter':20} {'total':>7} {'last(1st) ms':>13} {'first(rep) ms':>14} {'last(rep) ms':>13}")
            for row in listing["rows"]:
                print(f"{row['sort_by']:10} {row['sort_order']:5} {row['filter']:20} {row['total']:7d} "
                      f"{row['last_page_first_request']:13.2f} {row['first_page_repeat']:14.2f} {row['last_page_repeat']:13.2f}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
