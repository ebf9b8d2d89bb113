"""An import into a big dataset (issue 19): ``added`` new images appended to 100k or 1M, whole document vs streamed.

A synthetic ``dataset.json`` (``scale_bench.write_synthetic``: ten classes
``class_00``..``class_09``, two splits) and its index cache are written once
and restored before every import (``copy2``: the same bytes and mtime, so the
cache stays valid). The import folder is ``added`` real 32x24 PNGs (Pillow)
in an imagefolder layout under ``class_03``, ``class_07`` and ``class_10`` (a
new class sorting after every existing one), so the streamed path applies.

Each side runs ``services.datasets.import_local`` on a fresh services object
that has listed a page first (the index in memory, loaded from its cache, as
in a server):

* ``whole``: ``append_streamed`` off, the path every import took before:
  ``dataset.json`` parsed whole, merged, encoded and written;
* ``streamed``: the default (``core/datasets/append.py``): the index's
  columns, the old images' bytes copied, the joined index adopted;
* ``streamed_no_index``: the same with neither the index in memory nor its
  cache on disk (the import first builds it from ``dataset.json``);
* ``into_empty``: the same folder imported into an empty project, the floor
  (reading, hashing, decoding and staging the files; almost no commit).

The clock is frozen during the in-process imports, so ``same_bytes`` says
whether both sides wrote the same ``dataset.json``. The adopted index's
cache is written behind the answer (``index_cache.save_later``) and timed
apart (``cache_write_after_s``). ``rss_*``: the peak resident memory
(``VmHWM``) of a fresh interpreter that listed a page and then imported,
and its resident size before the import (``rss_*_before_bytes``).

Run: ``python -c "from benchmarks.scale_import_bench import bench_import_append as b; print(b(Path('/tmp/x'), 100_000))"``
or ``python -m benchmarks.scale_import_bench <workdir> <count> [added]``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.scale_bench import ROOT, _status_bytes, _vm_rss, write_synthetic

CLASSES = ("class_03", "class_07", "class_10")
FROZEN_NOW = "2026-01-02T03:04:05Z"


def bench_import_append(workdir: Path, count: int, added: int = 1000) -> dict[str, Any]:
    """Seconds and bytes of one import of ``added`` images into ``count``, both ways (see the module docstring)."""
    from modelyard.core.datasets import index_cache
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    workdir = Path(workdir)
    settings = Settings(workspace=workdir / "ws", import_roots=[workdir / "imports"])
    services = build_services(settings)
    project = str(services.projects.create("bench-import").id)
    dataset_json = services.workspace.dataset_json(project)
    started = time.perf_counter()
    write_synthetic(dataset_json, count)
    generate_s = time.perf_counter() - started
    assert len(services.datasets.store.index(project)) == count  # builds it and writes the cache
    index_cache.flush()
    pristine = workdir / "pristine"
    pristine.mkdir(parents=True, exist_ok=True)
    for path in (dataset_json, index_cache.cache_path(dataset_json)):
        shutil.copy2(path, pristine / path.name)
    folder = write_import_folder(workdir / "imports" / "new", added)

    results: dict[str, Any] = {"images": count, "added": added, "dataset_json_bytes": dataset_json.stat().st_size,
                               "generate_s": generate_s}
    written = {}
    for side in ("whole", "streamed", "streamed_no_index"):
        _restore(pristine, dataset_json, keep_cache=side != "streamed_no_index")
        seconds, answer, cache_s = _timed_import(settings, project, folder, side)
        assert answer["imported"] == added, answer
        results[f"{side}_s"] = seconds
        results[f"{side}_cache_write_after_s"] = cache_s
        written[side] = hashlib.sha256(dataset_json.read_bytes()).hexdigest()
    results["same_bytes"] = len(set(written.values())) == 1
    empty = str(services.projects.create("bench-import-empty").id)  # the floor: staging the files, a trivial commit
    started = time.perf_counter()
    services.datasets.import_local(empty, str(folder))
    results["into_empty_s"] = time.perf_counter() - started
    for side in ("whole", "streamed"):
        _restore(pristine, dataset_json, keep_cache=True)
        probe = _rss_probe(settings.workspace, project, folder, side)
        results[f"rss_{side}_peak_bytes"] = probe["peak"]
        results[f"rss_{side}_before_bytes"] = probe["before"]
    results["speedup"] = results["whole_s"] / results["streamed_s"]
    return results


def write_import_folder(folder: Path, count: int) -> Path:
    """``count`` distinct real PNGs, ``folder/<class>/<i>.png`` over ``CLASSES``."""
    from PIL import Image

    for number in range(count):
        image = Image.new("RGB", (32, 24), (number % 256, (number // 256) % 256, 90))
        image.putpixel((0, 0), (255, number % 7, number % 11))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        target = folder / CLASSES[number % len(CLASSES)] / f"{number:06d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(buffer.getvalue())
    return folder


def _restore(pristine: Path, dataset_json: Path, keep_cache: bool) -> None:
    """The dataset as generated: its ``dataset.json`` (same mtime), its cache or none, no images."""
    from modelyard.core.datasets import index_cache

    index_cache.flush()
    shutil.rmtree(dataset_json.parent / "images", ignore_errors=True)
    cache = index_cache.cache_path(dataset_json)
    cache.unlink(missing_ok=True)
    shutil.copy2(pristine / dataset_json.name, dataset_json)
    if keep_cache:
        shutil.copy2(pristine / cache.name, cache)


def _timed_import(settings: Any, project: str, folder: Path, side: str) -> tuple[float, dict[str, Any], float]:
    """One import on fresh services (a page listed first unless ``streamed_no_index``); its seconds and answer."""
    from modelyard.core.datasets import index_cache
    from modelyard.core.datasets import service as service_module
    from modelyard.core.services import build_services

    services = build_services(settings)
    services.datasets.append_streamed = side != "whole"
    if side != "streamed_no_index":
        services.datasets.list_images(project)
    real_now = service_module.utc_now_iso
    service_module.utc_now_iso = lambda: FROZEN_NOW  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        answer = services.datasets.import_local(project, str(folder))
        seconds = time.perf_counter() - started
    finally:
        service_module.utc_now_iso = real_now  # type: ignore[assignment]
    started = time.perf_counter()
    index_cache.flush()
    return seconds, answer, time.perf_counter() - started


def _rss_probe(workspace: Path, project: str, folder: Path, side: str) -> dict[str, int]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_import_bench", "--rss", str(workspace), project, str(folder), side],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the memory probe failed: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def rss_probe_main(workspace: Path, project: str, folder: Path, side: str) -> dict[str, int]:
    """In a fresh interpreter: list a page (the index from its cache), then import; peak and pre-import RSS."""
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    services = build_services(Settings(workspace=workspace, import_roots=[folder.parent]))
    services.datasets.append_streamed = side != "whole"
    services.datasets.list_images(project)
    before = _vm_rss()
    services.datasets.import_local(project, str(folder))
    return {"peak": _status_bytes("VmHWM"), "before": before}


if __name__ == "__main__":
    if sys.argv[1] == "--rss":
        print(json.dumps(rss_probe_main(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), sys.argv[5])))
    else:
        print(json.dumps(bench_import_append(Path(sys.argv[1]), int(sys.argv[2]),
                                             *(int(value) for value in sys.argv[3:4])), indent=2))
