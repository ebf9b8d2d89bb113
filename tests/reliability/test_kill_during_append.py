"""SIGKILL a process in the middle of a streamed import append: the previous ``dataset.json`` stays, whole.

The child imports a folder of new images into a 100,000-image dataset through
the real services (the index in memory, as in a server), so the import is
appended streamed (``core/datasets/append.py``).

* Killed while the temp file is half written (its copy slowed: small pieces, a
  pause per piece): ``dataset.json`` is byte for byte the previous one and
  loads, no staged file was moved into ``images/`` (the moves come after the
  temp is written), a restart sweeps the temp and the staging folder, and the
  import can simply be sent again.
* Killed after the moves, before the rename (held there): ``dataset.json`` is
  still the previous one, and ``images/`` holds the moved files it does not
  list. The whole-document path leaves exactly that too (it moves the files
  first, then writes); nothing removes such files, but the import sent again
  gives its images the same names and renames over them, so the dataset ends
  whole, with no file left unlisted.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from modelyard.core.datasets.document import image_stats
from modelyard.core.jsonio import TEMP_PREFIX, atomic_write_json, read_json, remove_stale_temp_files
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from tests.core.datasets.factories import image_bytes, write
from tests.helpers.kill import sigkill_when

IMAGES = 100_000
#: the rename is held by the child, not raced: a small dataset is enough there
HELD_IMAGES = 2_000

CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from modelyard.core import jsonio
    from modelyard.core.datasets import append
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    workspace, project, folder, mode = sys.argv[1:5]
    services = build_services(Settings(workspace=Path(workspace), import_roots=[Path(folder).parent]))
    services.datasets.list_images(project)  # the index in memory, as in a server
    services.datasets.append_streamed = mode != "whole"
    if mode == "mid-write":
        append._CHUNK = 256 * 1024
        pieces = append.image_pieces

        def slow_pieces(*args, **kwargs):
            for piece in pieces(*args, **kwargs):
                time.sleep(0.01)
                yield piece

        append.image_pieces = slow_pieces
    else:  # hold the rename of dataset.json, once every staged file is moved in
        replace = os.replace

        def held_replace(source, target, *args, **kwargs):
            if str(target).endswith("dataset.json"):
                print("renaming", flush=True)
                time.sleep(120)
            return replace(source, target, *args, **kwargs)

        jsonio.os.replace = held_replace
    services.datasets.import_local(project, folder)
    print("finished", flush=True)
""")


def _document(count: int) -> dict:
    classes = ["cat", "dog", "eel"]
    images = [{"filename": f"img_{i:06d}.jpg", "width": 64, "height": 48, "size": 1000 + i, "format": "jpeg",
               "sha256": f"{i:064x}", "source_path": f"x/{i}.jpg", "split": ["train" if i % 5 else "val"],
               "annotations": [{"type": "label", "class_id": i % 3, "class_name": classes[i % 3]}]} for i in range(count)]
    return {"version": 1, "task": "classification", "source": None, "classes": classes, "split_names": ["first"],
            "image_stats": image_stats(images), "images": images}


def _setup(tmp_path: Path, count: int = IMAGES) -> tuple[Path, str, Path, Path]:
    workspace, imports = tmp_path / "workspace", tmp_path / "imports"
    services = build_services(Settings(workspace=workspace, import_roots=[imports]))
    project = str(services.projects.create("Kill me").id)
    atomic_write_json(services.workspace.dataset_json(project), _document(count))
    folder = imports / "new"
    for number in range(12):  # two classes sorting after eel, and one it has
        write(folder / ("fox", "gnu", "cat")[number % 3] / f"{number}.png", image_bytes(colour=number))
    return workspace, project, folder, services.workspace.images_dir(project)


def _start(workspace: Path, project: str, folder: Path, mode: str) -> subprocess.Popen:  # type: ignore[type-arg]
    return subprocess.Popen([sys.executable, "-c", CHILD, str(workspace), project, str(folder), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_while_the_append_writes_keeps_the_previous_dataset_json_and_moves_nothing(tmp_path: Path) -> None:
    workspace, project, folder, images = _setup(tmp_path)
    path = workspace / "projects" / project / "dataset" / "dataset.json"
    before = path.read_bytes()

    child = _start(workspace, project, folder, "mid-write")

    def half_written() -> bool:
        temps = [p for p in path.parent.iterdir() if p.name.startswith(TEMP_PREFIX + "dataset.json")]
        return bool(temps) and temps[0].stat().st_size > 1024 * 1024

    sigkill_when(child, half_written, "the append's write")
    assert b"finished" not in child.stdout.read()  # type: ignore[union-attr]

    assert path.read_bytes() == before  # untouched, and it loads
    assert read_json(path)["classes"] == ["cat", "dog", "eel"]
    assert not images.exists() or not list(images.iterdir())  # no staged file was moved in
    half = [p for p in path.parent.iterdir() if p.name.startswith(TEMP_PREFIX + "dataset.json")]
    assert half and 0 < half[0].stat().st_size < len(before) + 100_000  # the kill landed mid-write

    fresh = build_services(Settings(workspace=workspace, import_roots=[folder.parent]))  # a restarted server
    assert not list(fresh.workspace.staging_dir.iterdir())  # the killed import's staging folder is gone
    assert len(fresh.datasets.store.index(project)) == IMAGES  # never reads the temp
    assert remove_stale_temp_files(workspace, min_age_s=0) >= 1
    answer = fresh.datasets.import_local(project, str(folder))  # sent again: appended
    assert answer["imported"] == 12 and answer["classes"] == ["cat", "dog", "eel", "fox", "gnu"]
    assert sorted(p.name for p in images.iterdir()) == sorted(f"{('fox', 'gnu', 'cat')[n % 3]}_{n}.png" for n in range(12))
    assert len(fresh.datasets.store.index(project)) == IMAGES + 12


@pytest.mark.parametrize("mode", ["streamed", "whole"])
def test_sigkill_between_the_moves_and_the_rename_leaves_unlisted_files_which_the_import_sent_again_takes_over(
        tmp_path: Path, mode: str) -> None:
    workspace, project, folder, images = _setup(tmp_path, HELD_IMAGES)
    path = workspace / "projects" / project / "dataset" / "dataset.json"
    before = path.read_bytes()

    child = _start(workspace, project, folder, mode)
    assert child.stdout is not None
    sigkill_when(child, lambda: child.stdout.readline().strip() == b"renaming", "the rename")  # type: ignore[union-attr]

    assert path.read_bytes() == before
    moved = sorted(p.name for p in images.iterdir())
    assert len(moved) == 12  # in images/, listed nowhere: both paths leave this (moves first, then the rename)

    fresh = build_services(Settings(workspace=workspace, import_roots=[folder.parent]))
    remove_stale_temp_files(workspace, min_age_s=0)
    fresh.datasets.import_local(project, str(folder))
    listed = {image["filename"] for image in read_json(path)["images"]}
    assert sorted(p.name for p in images.iterdir()) == moved and set(moved) <= listed  # renamed over: none unlisted
