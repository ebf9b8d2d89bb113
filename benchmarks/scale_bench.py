"""Datasets at ImageNet scale (issue 19): index build, split creation, memory and page latency at 100k and 1M images.

A synthetic ``dataset.json`` (the schema an import writes: ten classes, ~5 %
unlabelled, two splits) is written *streamed*, batch by batch, in exactly the
bytes ``atomic_write_json`` would write, so a million images never sit in
this process as dicts. Then, through the real services:

* ``index_build``: the first ``store.index`` of a fresh store with no cache
  beside ``dataset.json`` (cold: parses the file);
* ``index_build_warm``: the same from a fresh store once the on-disk cache
  exists (the server's restart path);
* ``split_create``: ``services.splits.create`` (0.8/0.1/0.1, stratified), the
  index already loaded, including the rewrite of ``dataset.json``;
* ``list_page``: one page of 50 through uvicorn + httpx (``http_bench``'s
  server), every sort/filter combination probed, the slowest repeated one timed;
* ``rss``: peak resident memory (``VmHWM``) of a fresh server process
  (its own interpreter, cold index, uvicorn in-process) after it listed a
  page, previewed a split and created one over HTTP.

The rows are absolute (one side). Run: ``python -m benchmarks --only scale_100k_split_create``
(the whole 100k or 1M measurement runs; only the named rows are reported).
"""

from __future__ import annotations

import json
import logging
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

CLASSES = [f"class_{i:02d}" for i in range(10)]
BATCH = 50_000
PAGE_SIZE = 50
ROOT = Path(__file__).resolve().parents[1]


# -- the synthetic dataset.json ---------------------------------------------------------------------

def _images(count: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    """The images of ``datasets_bench._synthetic_dataset`` (same generator), in batches of ``BATCH``."""
    rng = random.Random(seed)
    batch: list[dict[str, Any]] = []
    for i in range(count):
        label = CLASSES[rng.randrange(len(CLASSES))] if rng.random() > 0.05 else None
        batch.append({
            "filename": f"{label or 'unlabelled'}_{i:06d}.jpg", "width": 64, "height": 48, "size": rng.randrange(1000, 90000),
            "format": "jpeg", "sha256": f"{i:064x}", "source_path": f"{label}/{i:06d}.jpg",
            "split": [rng.choice(["train", "train", "train", "val", "test"]), rng.choice(["train", "val", "none"])],
            "annotations": [] if label is None else [{"type": "label", "class_id": CLASSES.index(label), "class_name": label}],
        })
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def write_synthetic(path: Path, count: int, seed: int = 0) -> int:
    """Write a ``count``-image ``dataset.json`` streamed, byte-identical to ``atomic_write_json`` of the same dict."""
    head = {"version": 1, "task": "classification",
            "source": {"kind": "local", "format": "imagefolder", "imported_at": "2026-01-01T00:00:00Z"},
            "classes": CLASSES, "split_names": ["80-10-10", "other"],
            "image_stats": {"num_images": count, "min_width": 64, "max_width": 64, "min_height": 48, "max_height": 48,
                            "formats": ["jpeg"]}}
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "wb") as out:
        text = msgspec.json.format(msgspec.json.encode(head), indent=2)
        out.write(text[:-2] + b',\n  "images": [')
        for number, batch in enumerate(_images(count, seed)):
            body = msgspec.json.format(msgspec.json.encode(batch), indent=2)[2:-2]  # without "[\n" and "\n]"
            out.write((b",\n  " if number else b"\n  ") + body.replace(b"\n", b"\n  "))
            written += len(batch)
        out.write(b"\n  ]\n}\n" if written else b"]\n}\n")
    return written


def drop_index_cache(dataset_json: Path) -> None:
    """Remove whatever index cache sits beside ``dataset.json`` (hidden files), so the next build is cold."""
    for path in dataset_json.parent.iterdir():
        if path.name.startswith(".") and path.is_file():
            path.unlink()


# -- in-process rows ---------------------------------------------------------------------------------

def bench_scale(workdir: Path, count: int, repeats: int = 3, split_repeats: int = 2, page_repeats: int = 30) -> dict[str, Any]:
    """Every figure of one scale (see the module docstring); seconds, milliseconds and bytes."""
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.datasets.store import DatasetStore
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    workspace = Path(workdir) / "ws"
    settings = Settings(workspace=workspace)
    services = build_services(settings)
    project = services.projects.create("bench-scale").id
    dataset_json = services.workspace.dataset_json(project)
    started = time.perf_counter()
    write_synthetic(dataset_json, count)
    generate_s = time.perf_counter() - started
    cold, warm, cache_writes = [], [], []
    for _ in range(repeats):
        drop_index_cache(dataset_json)
        store = DatasetStore(services.workspace)
        started = time.perf_counter()
        assert len(store.index(project)) == count
        cold.append(time.perf_counter() - started)
        cache_writes.append(_behind_writes())  # the cache is written behind the answer: timed apart
        del store
        store = DatasetStore(services.workspace)
        started = time.perf_counter()
        assert len(store.index(project)) == count
        warm.append(time.perf_counter() - started)
        del store
    rss = _rss_probe(workspace, project)  # before splits are added: the file as generated
    services.datasets.list_images(project)  # the service's own index, loaded before the timed creations
    creates, create_cache_writes = [], []
    for number in range(split_repeats):
        started = time.perf_counter()
        services.splits.create(project, f"bench-{number}", Ratios(0.8, 0.1, 0.1), seed=number)
        creates.append(time.perf_counter() - started)
        create_cache_writes.append(_behind_writes())
    page = _page_http(settings, services, project, page_repeats)
    return {"images": count, "dataset_json_bytes": dataset_json.stat().st_size, "generate_s": generate_s,
            "index_build_cold_s": cold, "index_build_warm_s": warm, "split_create_s": creates,
            "cache_write_after_build_s": cache_writes, "cache_write_after_split_s": create_cache_writes, **page, **rss}


def _behind_writes() -> float:
    """Seconds until the index cache handed to the background writer is on disk (after the timed answer)."""
    from modelyard.core.datasets import index_cache

    started = time.perf_counter()
    assert index_cache.flush(timeout=120)
    return time.perf_counter() - started


def _page_http(settings: Any, services: Any, project: str, repeats: int) -> dict[str, Any]:
    """The slowest repeated page of 50 over all sort/filter combinations, through uvicorn (ms)."""
    import httpx

    from benchmarks.datasets_bench import LIST_FILTERS, LIST_SORTS
    from benchmarks.http_bench import _get_ms, serving
    from modelyard.api.app import create_app

    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = f"/api/datasets/{project}/images"
    probed = []
    with serving(create_app(settings, services)) as base_url, httpx.Client(base_url=base_url, timeout=120.0) as client:
        _get_ms(client, url, {"page": 1, "page_size": PAGE_SIZE})
        for (sort_by, order), (name, filters) in ((s, f) for s in LIST_SORTS for f in LIST_FILTERS.items()):
            params = {"page": 1, "page_size": PAGE_SIZE, "sort_by": sort_by, "sort_order": order, **filters}
            first = _get_ms(client, url, params)
            probe = statistics.median(_get_ms(client, url, params) for _ in range(3))
            probed.append((probe, first, f"{sort_by} {order} {name}", params))
        _, _, combination, params = max(probed, key=lambda row: row[0])
        timings = [_get_ms(client, url, params) for _ in range(repeats)]
    return {"list_page_ms": timings, "list_page_combination": combination,
            "list_page_slowest_first_request_ms": max(row[1] for row in probed)}


# -- the memory probe: a fresh server process ---------------------------------------------------------

def _rss_probe(workspace: Path, project: str) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_bench", str(workspace), project],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the memory probe failed: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def rss_probe_main(workspace: Path, project: str) -> dict[str, Any]:
    """In a fresh interpreter: serve the workspace, list, preview and create a split over HTTP; peak RSS."""
    import httpx

    from benchmarks.http_bench import serving
    from modelyard.api.app import create_app
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings(workspace=workspace)
    services = build_services(settings)
    drop_index_cache(services.workspace.dataset_json(project))
    from modelyard.core.datasets.kinds import annotates_boxes

    annotates_boxes(services.datasets.tasks, "classification")  # loads the plugins (and torch), as any server does
    baseline = _vm_rss()
    with serving(create_app(settings, services)) as base_url, httpx.Client(base_url=base_url, timeout=1800.0) as client:
        for method, url, body in (("GET", f"/api/datasets/{project}/images?page=1&page_size=50", None),
                                  ("GET", f"/api/splits/{project}/preview?train=0.8&val=0.1&test=0.1", None),
                                  ("POST", f"/api/splits/{project}", {"name": "rss-probe",
                                                                       "ratios": {"train": 0.8, "val": 0.1, "test": 0.1}})):
            response = client.request(method, url, json=body)
            if response.status_code >= 400:
                raise RuntimeError(f"{method} {url} answered {response.status_code}: {response.text[:300]}")
        current = _vm_rss()
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent, so a probe started by a
        # benchmark process holding gigabytes would report the parent's size, not its own
        peak = _status_bytes("VmHWM")
        inherited = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        created = response.json()["data"]["split_index"]
        client.delete(f"/api/splits/{project}/{created}")  # leave the file as it was for the timed rows
    return {"rss_peak_bytes": peak, "rss_after_bytes": current, "rss_baseline_bytes": baseline,
            "rss_maxrss_with_parent_bytes": inherited}


def _vm_rss() -> int:
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(f"{field}:"))


if __name__ == "__main__":
    print(json.dumps(rss_probe_main(Path(sys.argv[1]), sys.argv[2])))
