"""SIGKILL a process in the middle of a streamed ``dataset.json`` rewrite (split create): the old file stays, whole.

The child creates a split through the real services on a 100,000-image
dataset; its writes are slowed (small chunks, a pause per write) so the kill
lands while the temp file is half written. Afterwards: ``dataset.json`` is
byte for byte the previous one and loads, the half-written temp is never read
as data (a fresh store indexes the old file; the stale-temp sweep removes it),
and the next split create works.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from modelyard.core.datasets.document import image_stats
from modelyard.core.datasets.splits import Ratios
from modelyard.core.jsonio import TEMP_PREFIX, atomic_write_json, read_json, remove_stale_temp_files
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from tests.helpers.kill import sigkill_when

IMAGES = 100_000

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from modelyard.core.datasets import rewrite
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    services = build_services(Settings(workspace=Path(sys.argv[1])))
    services.datasets.list_images(sys.argv[2])  # the index in memory, as in a server
    rewrite._CHUNK = 256 * 1024
    write_all = rewrite._write_all

    def slow_write_all(fd, parts):
        time.sleep(0.01)
        write_all(fd, parts)

    rewrite._write_all = slow_write_all
    services.splits.create(sys.argv[2], "never", Ratios(0.8, 0.1, 0.1), seed=0)
    print("finished")
""")


def _document(count: int) -> dict:
    classes = ["cat", "dog", "eel"]
    images = [{"filename": f"img_{i:06d}.jpg", "width": 64, "height": 48, "size": 1000 + i, "format": "jpeg",
               "sha256": f"{i:064x}", "source_path": f"x/{i}.jpg", "split": ["train" if i % 5 else "val"],
               "annotations": [{"type": "label", "class_id": i % 3, "class_name": classes[i % 3]}]} for i in range(count)]
    return {"version": 1, "task": "classification", "source": None, "classes": classes, "split_names": ["first"],
            "image_stats": image_stats(images), "images": images}


def test_sigkill_during_a_streamed_rewrite_keeps_the_previous_dataset_json(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    services = build_services(Settings(workspace=workspace))
    project = str(services.projects.create("Kill me").id)
    path = services.workspace.dataset_json(project)
    atomic_write_json(path, _document(IMAGES))
    before = path.read_bytes()

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(workspace), project],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def rewriting() -> bool:
        temps = [p for p in path.parent.iterdir() if p.name.startswith(TEMP_PREFIX + "dataset.json")]
        return bool(temps) and temps[0].stat().st_size > 1024 * 1024

    sigkill_when(child, rewriting, "the rewrite")
    assert b"finished" not in child.stdout.read()  # type: ignore[union-attr]

    assert path.read_bytes() == before  # untouched, and it loads
    assert read_json(path)["split_names"] == ["first"]
    half = [p for p in path.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert half and 0 < half[0].stat().st_size < len(before)  # the kill landed mid-write

    fresh = build_services(Settings(workspace=workspace))  # a restarted server: never reads the temp
    assert len(fresh.datasets.store.index(project)) == IMAGES
    assert [split["name"] for split in fresh.splits.list(project)] == ["first"]
    assert remove_stale_temp_files(workspace, min_age_s=0) >= 1
    assert not [p for p in path.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    created = fresh.splits.create(project, "after", Ratios(0.8, 0.1, 0.1), seed=0)
    assert created["split_index"] == 1
    assert read_json(path)["split_names"] == ["first", "after"]
