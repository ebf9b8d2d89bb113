"""Split create and delete rewrite ``dataset.json`` streamed: the same bytes as the whole-document writer.

Each case writes a realistic document with ``atomic_write_json``, runs the
service (which must take the streamed path: ``store.load`` is made to fail),
and compares the file with what the whole-document code writes for the same
change: the document loaded with ``read_json``, changed as ``create``/``delete``
always changed it, and written with ``atomic_write_json``.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from modelyard.core.datasets import rewrite
from modelyard.core.datasets.document import SPLIT_VALUES, image_stats
from modelyard.core.datasets.splits import Ratios
from modelyard.core.errors import StorageFullError
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.services import Services

NAMES = ["cat", "dog", "éléphant", "日本"]


def _image(i: int, rng: random.Random, task: str, split_names: list[str]) -> dict[str, Any]:
    stem = rng.choice(["img", "Bild_ä", "写真", "zebra", "A"])
    image: dict[str, Any] = {
        "filename": f"{stem}_{i:04d}.{rng.choice(['jpg', 'png'])}", "width": rng.randrange(8, 4000),
        "height": rng.randrange(8, 3000), "size": rng.randrange(100, 10**7), "format": rng.choice(["jpeg", "png"]),
        "sha256": f"{rng.getrandbits(256):064x}", "source_path": f"sub/ディレクトリ/{i}.jpg",
        "split": [rng.choice(SPLIT_VALUES) for _ in split_names],
    }
    if rng.random() < 0.3:
        image["source_subset"] = rng.choice(["train", "val"])
    if task == "classification":
        name = rng.choice([*NAMES, None])
        image["annotations"] = [] if name is None else [{"type": "label", "class_id": NAMES.index(name), "class_name": name}]
    else:
        image["annotations"] = [
            {"type": "bbox", "class_id": NAMES.index(name), "class_name": name,
             "bbox": [rng.uniform(0, 100), rng.choice([0.0, 1e-7, 12.5]), rng.uniform(1, 50), float(rng.randrange(1, 9))]}
            for name in rng.choices(NAMES, k=rng.randrange(0, 4))
        ]
    return image


def _document(task: str, count: int, split_names: list[str], seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    images = [_image(i, rng, task, split_names) for i in range(count)]
    return {"version": 1, "task": task, "source": {"kind": "local", "format": "imagefolder", "imported_at": "2026-01-01T00:00:00Z"},
            "classes": sorted(NAMES), "split_names": split_names, "image_stats": image_stats(images), "images": images}


def _legacy_create(doc: dict[str, Any], name: str, subsets: list[str]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for image, subset in zip(doc["images"], subsets, strict=True):
        image.setdefault("split", [])
        image["split"] += ["none"] * (len(doc["split_names"]) - len(image["split"]))
        image["split"].append(subset)
    doc["split_names"].append(name)
    doc["image_stats"] = image_stats(doc["images"])
    return doc


def _legacy_delete(doc: dict[str, Any], split_index: int) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["split_names"].pop(split_index)
    for image in doc["images"]:
        if split_index < len(image.get("split", ())):
            del image["split"][split_index]
    doc["image_stats"] = image_stats(doc["images"])
    return doc


def _expected_bytes(tmp_path: Path, doc: dict[str, Any]) -> bytes:
    path = tmp_path / "expected" / "dataset.json"
    atomic_write_json(path, doc)
    return path.read_bytes()


@pytest.fixture
def streamed_only(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(project_id: str) -> dict[str, Any]:
        raise AssertionError("the whole-document path ran")

    monkeypatch.setattr(services.splits.store, "load", refuse)


def _project(services: Services, task: str, doc: dict[str, Any]) -> tuple[str, Path]:
    project = str(services.projects.create(f"P {task}", task=task).id)
    path = services.workspace.dataset_json(project)
    atomic_write_json(path, doc)
    return project, path


@pytest.mark.parametrize("task", ["classification", "object_detection"])
@pytest.mark.parametrize("split_names", [[], ["source"], ["a", "b"]])
@pytest.mark.parametrize("stratified", [True, False])
def test_create_writes_the_bytes_of_the_whole_document_writer(services: Services, tmp_path: Path, streamed_only: None,
                                                             task: str, split_names: list[str], stratified: bool) -> None:
    doc = _document(task, 300, split_names, seed=len(split_names))
    project, path = _project(services, task, doc)
    services.datasets.list_images(project)  # as a server does: the index is in memory
    created = services.splits.create(project, "new ☃", Ratios(0.7, 0.2, 0.1), seed=3, stratified=stratified)
    after = read_json(path)
    subsets = [image["split"][-1] for image in after["images"]]
    assert path.read_bytes() == _expected_bytes(tmp_path, _legacy_create(doc, "new ☃", subsets))
    assert created["split_index"] == len(split_names)
    # the assignment is the one the whole-document code computes for this document
    assignment, _ = services.splits.assignment(json.loads(json.dumps(doc)), Ratios(0.7, 0.2, 0.1), 3, stratified)
    assert subsets == assignment.subsets
    assert created["stats"] == {value: subsets.count(value) for value in SPLIT_VALUES}
    # the index adopted after the rewrite is the one a fresh build reads from the new file
    assert services.splits.get(project, created["split_index"])["stats"] == created["stats"]
    page = services.datasets.list_images(project, page_size=500)["items"]
    by_name = {image["filename"]: image["split"] for image in after["images"]}
    assert all(item["split"] == by_name[item["filename"]] for item in page)


def test_create_repairs_short_lists_as_the_writer_did(services: Services, tmp_path: Path, streamed_only: None) -> None:
    doc = _document("classification", 120, ["a", "b", "c"], seed=5)
    for number, image in enumerate(doc["images"]):
        del image["split"][number % 4:]  # lists of 0 to 3 values where 3 are named
    project, path = _project(services, "classification", doc)
    services.splits.create(project, "d", Ratios(0.8, 0.1, 0.1), seed=0)
    subsets = [image["split"][-1] for image in read_json(path)["images"]]
    assert path.read_bytes() == _expected_bytes(tmp_path, _legacy_create(doc, "d", subsets))


@pytest.mark.parametrize("task", ["classification", "object_detection"])
@pytest.mark.parametrize("split_index", [0, 1, 2])
def test_delete_writes_the_bytes_of_the_whole_document_writer(services: Services, tmp_path: Path, streamed_only: None,
                                                             task: str, split_index: int) -> None:
    doc = _document(task, 200, ["a", "ü", "c"], seed=split_index)
    for number, image in enumerate(doc["images"][:40]):
        del image["split"][number % 4:]  # some lists too short to hold the deleted split
    project, path = _project(services, task, doc)
    deleted = services.splits.delete(project, split_index)
    assert path.read_bytes() == _expected_bytes(tmp_path, _legacy_delete(doc, split_index))
    assert deleted["split_names"] == [name for i, name in enumerate(["a", "ü", "c"]) if i != split_index]
    assert [s["name"] for s in services.splits.list(project)] == deleted["split_names"]


def test_delete_of_the_only_split_leaves_empty_lists(services: Services, tmp_path: Path, streamed_only: None) -> None:
    doc = _document("classification", 50, ["only"])
    project, path = _project(services, "classification", doc)
    services.splits.delete(project, 0)
    assert path.read_bytes() == _expected_bytes(tmp_path, _legacy_delete(doc, 0))


def test_a_file_in_another_layout_is_rewritten_whole_with_the_same_content(services: Services, tmp_path: Path) -> None:
    doc = _document("classification", 60, ["a"])
    project = str(services.projects.create("Hand edited").id)
    path = services.workspace.dataset_json(project)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=True), encoding="utf-8")  # not our writer's layout
    created = services.splits.create(project, "b", Ratios(0.8, 0.1, 0.1), seed=1)
    subsets = [image["split"][-1] for image in read_json(path)["images"]]
    assert path.read_bytes() == _expected_bytes(tmp_path, _legacy_create(doc, "b", subsets))
    assert created["split_index"] == 1


def test_an_image_without_a_split_list_takes_the_whole_document_path(services: Services, tmp_path: Path) -> None:
    doc = _document("classification", 40, [])
    del doc["images"][7]["split"]  # the writer would add it last: not a splice of the list in place
    project, path = _project(services, "classification", doc)
    services.datasets.list_images(project)
    services.splits.create(project, "b", Ratios(0.8, 0.1, 0.1), seed=1)
    subsets = [image["split"][-1] for image in read_json(path)["images"]]
    assert path.read_bytes() == _expected_bytes(tmp_path, _legacy_create(doc, "b", subsets))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_a_disk_that_fills_mid_rewrite_stops_the_writer_and_leaves_the_file(services: Services, tmp_path: Path,
                                                                           streamed_only: None,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _document("classification", 3000, ["a"])
    project, path = _project(services, "classification", doc)
    services.datasets.list_images(project)
    before = path.read_bytes()
    monkeypatch.setattr(rewrite, "_CHUNK", 4096)  # many segments: the writer thread fails while more are queued
    real_writev, calls = os.writev, []

    def filling_writev(fd: int, buffers: list[bytes]) -> int:  # the disk is the boundary we fake
        calls.append(fd)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", filling_writev)
    with pytest.raises(StorageFullError, match="dataset.json"):
        services.splits.create(project, "b", Ratios(0.8, 0.1, 0.1), seed=1)
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
    assert not [thread for thread in threading.enumerate() if thread.name == "dataset-json-writer"]
    monkeypatch.setattr(os, "writev", real_writev)  # space freed: the same request now works
    services.splits.create(project, "b", Ratios(0.8, 0.1, 0.1), seed=1)
    subsets = [image["split"][-1] for image in read_json(path)["images"]]
    assert path.read_bytes() == _expected_bytes(tmp_path, _legacy_create(doc, "b", subsets))
