"""A non-replace import is appended to ``dataset.json`` streamed: the same bytes, answer and files as the whole document.

Every case runs the same imports in two workspaces: one as the service runs
them (appended when it can be), one with ``append_streamed`` off (the
whole-document merge, as imports always ran). The time is frozen, so the two
``dataset.json`` must be equal byte for byte, and so must the answers and the
files in ``images/``. Where the append must run, ``store.load`` (the whole
document) fails if called; where it must not (it would change an image already
there, or the file is not as our writer lays it out), the append is seen to
decline. After an append, the index the store adopted equals, column by
column, a fresh build from the new file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelyard.core.datasets import service as service_module
from modelyard.core.datasets.document import empty_dataset
from modelyard.core.datasets.index import DatasetIndex
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings
from tests.core.datasets.detection_factories import SCENES, Boxes, coco_folder
from tests.core.datasets.factories import image_bytes, write
from tests.core.datasets.test_index_appended import assert_same_index

NOW = "2026-02-03T04:05:06Z"

#: the first import of the classification cases: labels, an unlabelled file, unicode names and classes
FIRST = {"cat/a.png": 1, "cat/B.png": 2, "dog/a.png": 3, "Loose.png": 4, "Ärger/Ölfass.png": 5, "dog/写真.png": 6}


@dataclass
class Twins:
    """The same project in two workspaces: ``streamed`` as the service runs, ``whole`` always reading the document."""

    streamed: Services
    whole: Services
    ids: tuple[str, str]
    root: Path
    appended: list[bool]

    def both(self) -> Iterator[tuple[Services, str]]:
        yield self.streamed, self.ids[0]
        yield self.whole, self.ids[1]

    def seed(self, doc: dict[str, Any], writer: Callable[[Path, dict[str, Any]], None] = atomic_write_json) -> None:
        for services, project in self.both():
            writer(services.workspace.dataset_json(project), doc)

    def folder(self, name: str, files: dict[str, int]) -> Path:
        """An import folder of real PNGs; files with the same number have the same bytes."""
        for relative, colour in files.items():
            write(self.root / name / relative, image_bytes(colour=colour, size=(8 + colour % 5, 6 + colour % 3)))
        return self.root / name

    def import_both(self, folder: Path, must_append: bool | None = None) -> dict[str, Any]:
        """Import ``folder`` into both; ``must_append``: the append must run (``True``) or decline (``False``)."""
        self.appended.clear()
        if must_append:
            self.streamed.datasets.store.load = _refuse  # type: ignore[method-assign]
        try:
            answers = [services.datasets.import_local(project, str(folder)) for services, project in self.both()]
        finally:
            vars(self.streamed.datasets.store).pop("load", None)
        if must_append is not None:
            assert self.appended == [must_append]
        assert answers[0] == answers[1]
        self.assert_same()
        return answers[0]

    def assert_same(self) -> None:
        (streamed, first), (whole, second) = self.both()
        assert streamed.workspace.dataset_json(first).read_bytes() == whole.workspace.dataset_json(second).read_bytes()
        assert _files(streamed.workspace.images_dir(first)) == _files(whole.workspace.images_dir(second))

    def assert_index_follows(self) -> None:
        """The index the streamed store holds is the one a fresh build reads from the file, column by column."""
        services, project = self.streamed, self.ids[0]
        adopted = services.datasets.store.loaded_index(project)
        assert adopted is not None, "the store rebuilt or lost the index"
        assert_same_index(adopted, DatasetIndex.from_json(services.workspace.dataset_json(project).read_bytes()))
        fresh = build_services(services.settings)  # a restarted server: its cache on disk is the adopted index
        assert_same_index(fresh.datasets.store.index(project), adopted)


def _refuse(project_id: str) -> dict[str, Any]:
    raise AssertionError("the whole document was read")


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def make_twins(tmp_path: Path, import_root: Path, monkeypatch: pytest.MonkeyPatch, task: str = "classification") -> Twins:
    monkeypatch.setattr(service_module, "utc_now_iso", lambda: NOW)
    appended: list[bool] = []
    real = service_module.append_import

    def spy(*args: Any, **kwargs: Any) -> Any:
        done = real(*args, **kwargs)
        appended.append(done is not None)
        return done

    monkeypatch.setattr(service_module, "append_import", spy)
    made = []
    for name in ("streamed", "whole"):
        services = build_services(Settings(workspace=tmp_path / name, import_roots=[import_root]))
        made.append((services, str(services.projects.create("Twins", task=task).id)))
    made[1][0].datasets.append_streamed = False
    return Twins(made[0][0], made[1][0], (made[0][1], made[1][1]), import_root, appended)


@pytest.fixture
def twins(tmp_path: Path, import_root: Path, monkeypatch: pytest.MonkeyPatch) -> Twins:
    return make_twins(tmp_path, import_root, monkeypatch)


# -- appended ---------------------------------------------------------------------------------------------------


def test_an_import_of_new_classes_sorting_last_is_appended_with_the_same_bytes(twins: Twins) -> None:
    twins.import_both(twins.folder("one", FIRST))  # the first import: no dataset.json yet, the whole document
    answer = twins.import_both(twins.folder("two", {
        "cat/A.png": 10,        # cat_A.png: taken ignoring case (cat_a.png) -> cat_A_2.png
        "cat/b.png": 11,        # cat_b.png -> cat_b_2.png
        "loose.png": 12,        # unlabelled; Loose.png is taken -> loose_2.png
        "dog/copy.png": 1,      # the bytes of cat/a.png: a duplicate of the dataset's
        "dog/x.png": 13,
        "dog/x again.png": 13,  # a duplicate within the import
        "ärger/ölfass.png": 14, # a new class after Ärger; ärger_ölfass.png is taken ignoring case (non-ASCII)
        "日本/写真.png": 15,     # a new class sorting last
    }), must_append=True)
    assert answer["imported"] == 6
    assert answer["duplicates"] == [{"path": "dog/x.png", "duplicate_of": "dog/x again.png"},
                                    {"path": "dog/copy.png", "duplicate_of": "cat_a.png"}]
    assert answer["classes"] == ["cat", "dog", "Ärger", "ärger", "日本"]
    names = {image["source_path"]: image["filename"] for image in read_json(
        twins.streamed.workspace.dataset_json(twins.ids[0]))["images"]}
    assert names["cat/A.png"] == "cat_A_2.png" and names["loose.png"] == "loose_2.png"
    assert names["ärger/ölfass.png"] == "ärger_ölfass_2.png"
    twins.assert_index_follows()
    # and again, onto the appended file and its adopted index
    twins.import_both(twins.folder("three", {"日本/写真.png": 16, "cat/a_2.png": 17, "cat/a.png": 18}), must_append=True)
    twins.assert_index_follows()


def test_imports_into_existing_classes_only_are_appended(twins: Twins) -> None:
    twins.import_both(twins.folder("one", FIRST))
    twins.import_both(twins.folder("two", {"dog/more.png": 20, "cat/more.png": 21, "unlabelled.png": 22}), must_append=True)
    twins.assert_index_follows()


@pytest.mark.parametrize("second", [{"train/cat/t.png": 30, "test/dog/u.png": 31, "val/zebra/v.png": 32},
                                    {"cat/no_subset.png": 33, "zebra/z.png": 34}],
                         ids=["with-subsets", "without-subsets"])
def test_a_dataset_with_a_source_split_is_appended_to(twins: Twins, second: dict[str, int]) -> None:
    twins.import_both(twins.folder("one", {"train/cat/a.png": 1, "train/dog/b.png": 2, "val/cat/c.png": 3}))
    answer = twins.import_both(twins.folder("two", second), must_append=True)
    assert read_json(twins.streamed.workspace.dataset_json(twins.ids[0]))["split_names"] == ["source"]
    assert answer["imported"] == (3 if "train/cat/t.png" in second else 2)
    twins.assert_index_follows()


def test_an_empty_dataset_json_is_appended_to_and_gets_its_source_split(twins: Twins) -> None:
    twins.seed(empty_dataset("classification"))
    answer = twins.import_both(twins.folder("one", {"train/cat/a.png": 1, "val/dog/b.png": 2}), must_append=True)
    assert answer["num_images"] == 2
    assert read_json(twins.streamed.workspace.dataset_json(twins.ids[0]))["split_names"] == ["source"]
    twins.assert_index_follows()


def test_a_detection_import_with_a_new_class_sorting_last_is_appended(tmp_path: Path, import_root: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    twins = make_twins(tmp_path, import_root, monkeypatch, task="object_detection")
    twins.import_both(coco_folder(import_root / "one"))
    scenes = {"e.png": (50, 40, [("zebra", [1.5, 2.25, 10, 12.125]), ("car", [20, 20, 5, 5])]),
              "f.png": (30, 30, []),  # a background image
              "a.png": SCENES["a.png"]}  # the same bytes as the first import's a.png: a duplicate
    answer = twins.import_both(coco_folder(import_root / "two", scenes, _coco(scenes, ["car", "dog", "zebra"])),
                               must_append=True)
    assert answer["classes"] == ["car", "dog", "zebra"] and answer["imported"] == 2
    assert answer["duplicates"] == [{"path": "images/a.png", "duplicate_of": "images_a.png"}]
    twins.assert_index_follows()


def _coco(scenes: dict[str, tuple[int, int, Boxes]], classes: list[str]) -> dict[str, Any]:
    images = [{"id": n, "file_name": f"images/{name}", "width": w, "height": h} for n, (name, (w, h, _)) in
              enumerate(scenes.items(), start=1)]
    annotations = [{"id": k, "image_id": n, "category_id": classes.index(cls) + 1, "bbox": bbox, "area": 1, "iscrowd": 0}
                   for k, (n, cls, bbox) in enumerate(((n, cls, bbox) for n, (_, (_, _, boxes)) in
                                                       enumerate(scenes.items(), start=1) for cls, bbox in boxes), start=1)]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)]}


def test_an_import_of_duplicates_only_writes_nothing(twins: Twins) -> None:
    twins.import_both(twins.folder("one", FIRST))
    path = twins.streamed.workspace.dataset_json(twins.ids[0])
    before = path.read_bytes()
    answer = twins.import_both(twins.folder("two", {"zebra/same.png": 1, "again.png": 2}), must_append=True)
    assert answer["imported"] == 0 and len(answer["duplicates"]) == 2
    assert path.read_bytes() == before


# -- the whole document, and still the same bytes ----------------------------------------------------------------


def test_a_new_class_sorting_first_renumbers_every_image_through_the_whole_document(twins: Twins) -> None:
    twins.import_both(twins.folder("one", FIRST))
    twins.import_both(twins.folder("two", {"aardvark/a.png": 40, "cat/c.png": 41}), must_append=False)
    doc = read_json(twins.streamed.workspace.dataset_json(twins.ids[0]))
    assert doc["classes"][0] == "aardvark"
    assert all(annotation["class_id"] == doc["classes"].index(annotation["class_name"])
               for image in doc["images"] for annotation in image["annotations"])
    twins.import_both(twins.folder("three", {"zebra/z.png": 42}), must_append=None)  # appended again or not: same bytes


def test_a_first_source_split_on_a_dataset_with_images_goes_through_the_whole_document(twins: Twins) -> None:
    twins.import_both(twins.folder("one", FIRST))
    twins.import_both(twins.folder("two", {"train/cat/t.png": 50, "val/dog/v.png": 51}), must_append=False)
    doc = read_json(twins.streamed.workspace.dataset_json(twins.ids[0]))
    assert doc["split_names"] == ["source"] and all(len(image["split"]) == 1 for image in doc["images"])


def _document(images: int = 4) -> dict[str, Any]:
    """A dataset.json as an import writes it (no files behind it: a commit never opens the dataset's images)."""
    records = [{"filename": f"img_{i}.png", "width": 8, "height": 6, "size": 70 + i, "format": "png",
                "sha256": f"{i:064x}", "source_path": f"cat/{i}.png", "split": ["train"],
                "annotations": [{"type": "label", "class_id": 0, "class_name": "cat"}]} for i in range(images)]
    return {"version": 1, "task": "classification", "source": None, "classes": ["cat"], "split_names": ["s"],
            "image_stats": {"num_images": images, "min_width": 8, "max_width": 8, "min_height": 6, "max_height": 6,
                            "formats": ["png"]}, "images": records}


def _indent_4(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=4))


def _compact(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _without_source(doc: dict[str, Any]) -> dict[str, Any]:
    del doc["source"]
    return doc


def _with_a_wrong_class_id(doc: dict[str, Any]) -> dict[str, Any]:
    doc["images"][1]["annotations"][0]["class_id"] = 7
    return doc


def _with_an_unsafe_name(doc: dict[str, Any]) -> dict[str, Any]:
    doc["images"][2]["filename"] = "../escape.png"  # never indexed: the index does not describe every image
    return doc


def _with_images_before_the_header(doc: dict[str, Any]) -> dict[str, Any]:
    return {"images": doc.pop("images"), **doc}


@pytest.mark.parametrize(("change", "writer"), [
    (None, _indent_4), (None, _compact), (_without_source, atomic_write_json),
    (_with_a_wrong_class_id, atomic_write_json), (_with_an_unsafe_name, atomic_write_json),
    (_with_images_before_the_header, atomic_write_json),
], ids=["indent-4", "compact", "no-source-key", "wrong-class-id", "unsafe-name", "images-first"])
def test_a_hand_edited_dataset_json_goes_through_the_whole_document(twins: Twins, change: Any, writer: Any) -> None:
    doc = _document()
    twins.seed(change(doc) if change else doc, writer)
    twins.import_both(twins.folder("one", {"cat/new.png": 60, "zebra/z.png": 61}), must_append=False)


# -- failures ------------------------------------------------------------------------------------------------------


def _snapshot(services: Services, project: str) -> dict[str, bytes]:
    folder = services.workspace.dataset_dir(project)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failure_after_the_moves_undoes_them_and_keeps_the_previous_dataset_json(
        twins: Twins, monkeypatch: pytest.MonkeyPatch) -> None:
    services, project = twins.streamed, twins.ids[0]
    services.datasets.import_local(project, str(twins.folder("one", FIRST)))
    services.datasets.list_images(project)  # as a server does: the index (and its cache file) exists before
    before = _snapshot(services, project)
    path = services.workspace.dataset_json(project)
    from modelyard.core import jsonio

    real_replace = jsonio.os.replace
    in_images: list[set[str]] = []

    def failing_replace(source: Any, target: Any) -> None:
        if Path(target) == path:
            in_images.append({p.name for p in services.workspace.images_dir(project).iterdir()})
            raise OSError(5, "Input/output error")
        real_replace(source, target)

    monkeypatch.setattr(jsonio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output error"):
        services.datasets.import_local(project, str(twins.folder("two", {"öl/z.png": 70, "cat/c.png": 71})))
    assert in_images and {"öl_z.png", "cat_c.png"} <= in_images[0]  # the rename failed with the new files moved in
    assert twins.appended == []
    assert _snapshot(services, project) == before  # they are gone again; dataset.json is the previous one
    assert not list(services.workspace.staging_dir.iterdir())
    monkeypatch.setattr(jsonio.os, "replace", real_replace)
    assert services.datasets.import_local(project, str(twins.root / "two"))["imported"] == 2
    assert twins.appended == [True]
