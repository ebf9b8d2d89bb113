"""The dataset view (core/datasets/view.py): dataset.json's mapping served from the index, images made one at a time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.core.datasets.index import DatasetIndex, IndexedImage
from modelyard.core.datasets.index_cache import cache_path
from modelyard.core.datasets.view import DatasetView, load_dataset_view
from modelyard.core.jsonio import atomic_write_json
from tests.core.datasets.documents import classification_document, complete, detection_document, view_of


def parsed(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as a reader of the file gets it."""
    return json.loads(json.dumps(doc))


def as_dict(view: DatasetView) -> dict[str, Any]:
    return {key: list(value) if key == "images" else value for key, value in view.items()}


@pytest.mark.parametrize("doc", [classification_document(seed=1), classification_document(seed=2, splits=1),
                                 detection_document(seed=3)], ids=["classification", "one-split", "detection"])
def test_the_view_reads_exactly_as_the_parsed_document(doc: dict[str, Any]) -> None:
    view = DatasetView.from_document(doc)
    assert as_dict(view) == parsed(doc)
    assert list(view) == ["version", "task", "source", "classes", "split_names", "image_stats", "images"]
    assert len(view["images"]) == len(doc["images"]) and view.get("missing") is None


def test_the_generated_documents_hold_the_cases_the_view_must_keep() -> None:
    images = classification_document(seed=1)["images"] + detection_document(seed=3)["images"]
    assert any("source_subset" in i for i in images) and any(not i["annotations"] for i in images)
    assert any(len(i["split"]) < 3 for i in images) and any(not i["filename"].isascii() for i in images)
    assert any(sum(a["type"] == "bbox" for a in i["annotations"]) >= 3 for i in images)
    assert any(a["type"] == "label" and "class_name" not in a for i in images for a in i["annotations"])


def test_an_image_is_the_documents_own_dict_with_source_subset_only_when_it_has_one() -> None:
    doc = complete({"classes": ["a"], "split_names": ["s"], "images": [
        {"filename": "café.png", "split": ["val"], "source_subset": "val",
         "annotations": [{"type": "label", "class_id": 0, "class_name": "a"}]},
        {"filename": "b.png", "annotations": [{"type": "bbox", "class_id": 0, "class_name": "a", "bbox": [1, 2, 3, 4.5]}]},
    ]})
    first, second = DatasetView.from_document(doc)["images"]
    assert first == doc["images"][0] and second == doc["images"][1]
    assert "source_subset" not in second and second["annotations"][0]["bbox"] == [1.0, 2.0, 3.0, 4.5]


def test_images_are_made_one_at_a_time_when_read() -> None:
    class Counting(DatasetIndex):
        made: list[int] = []

        def image(self, position: int) -> IndexedImage:
            Counting.made.append(position)
            return super().image(position)

    built = DatasetView.from_document(classification_document(seed=4)).index
    view = DatasetView(Counting(built.arrays, built.meta))
    images = view["images"]
    assert len(images) == 300 and bool(images) and Counting.made == []
    assert images[7]["filename"] == built.filename(7) and images[-1]["filename"] == built.filename(299)
    assert Counting.made == [7, 299]
    iterator = iter(images)
    next(iterator)
    assert Counting.made == [7, 299, 0]
    assert [i["filename"] for i in images[2:4]] == [built.filename(2), built.filename(3)]
    with pytest.raises(IndexError):
        images[300]


def test_the_view_is_read_only_a_caller_cannot_change_the_shared_index() -> None:
    view = DatasetView.from_document(detection_document(seed=5))
    view["classes"].append("intruder")
    view["image_stats"]["formats"].append("bmp")
    view["source"]["kind"] = "changed"
    view["images"][0]["annotations"].clear()
    assert "intruder" not in view["classes"] and "bmp" not in view["image_stats"]["formats"]
    assert view["source"]["kind"] == "generated" and view["images"][0] == detection_document(seed=5)["images"][0]
    with pytest.raises(TypeError):
        view["classes"] = []  # type: ignore[index]


def test_images_the_index_would_not_serve_are_left_out() -> None:
    doc = complete({"images": [{"filename": "ok.png"}, {"filename": "../escape.png"}, {"filename": "ok.png"},
                               {"filename": "badhash.png", "sha256": "not-a-hash"}]})
    view = DatasetView.from_document(doc)
    assert [i["filename"] for i in view["images"]] == ["ok.png"] and view["image_stats"]["num_images"] == 1


def test_subset_positions_match_the_stored_string_exactly_in_file_order() -> None:
    doc = complete({"split_names": ["a", "b"], "images": [
        {"filename": "0.png", "split": ["train", "holdout"]}, {"filename": "1.png", "split": ["train"]},
        {"filename": "2.png", "split": []}, {"filename": "3.png", "split": ["val", "holdout"]},
        {"filename": "4.png", "split": ["Train", "val"]}]})
    view = DatasetView.from_document(doc)
    assert view.subset_positions(0, "train").tolist() == [0, 1]
    assert view.subset_positions(1, "holdout").tolist() == [0, 3]  # any value, as stored; 1.png's list is short
    assert view.subset_positions(1, "none").tolist() == []  # a short list holds no value, not "none"
    assert view.subset_positions(2, "train").tolist() == [] and view.subset_positions(0, "nope").tolist() == []
    assert view.filenames(np.array([3, 0])) == ["3.png", "0.png"]


def test_split_values_are_each_images_stored_value_and_none_past_a_short_list() -> None:
    doc = complete({"split_names": ["a", "b"], "images": [
        {"filename": "0.png", "split": ["train", "holdout"]}, {"filename": "1.png", "split": ["train"]},
        {"filename": "2.png", "split": []}, {"filename": "3.png", "split": ["val", "holdout"]}]})
    view = DatasetView.from_document(doc)
    assert view.split_values(0) == ["train", "train", "none", "val"]
    assert view.split_values(1) == ["holdout", "none", "none", "holdout"]
    assert view.split_values(1, np.array([3, 0])) == ["holdout", "holdout"]
    assert view.split_values(2) == ["none"] * 4 and view.split_values(-1, np.array([1])) == ["none"]


def test_annotation_columns_hold_each_images_annotations_of_one_type_in_order() -> None:
    doc = detection_document(seed=6)
    view = DatasetView.from_document(doc)
    positions = np.arange(0, len(doc["images"]), 3)
    boxes = view.annotations(positions, "bbox")
    expected = [(row, a) for row, p in enumerate(positions.tolist()) for a in doc["images"][p]["annotations"]
                if a["type"] == "bbox"]
    assert boxes.owner.tolist() == [row for row, _ in expected]
    assert boxes.class_id.tolist() == [a["class_id"] for _, a in expected] and boxes.has_class_id.all()
    assert boxes.bbox.tolist() == [a["bbox"] for _, a in expected] and boxes.has_bbox.all()
    assert [boxes.names[code] for code in boxes.name_code.tolist()] == [a["class_name"] for _, a in expected]
    assert view.image_sizes(positions[:2]).tolist() == [[doc["images"][p]["width"], doc["images"][p]["height"]]
                                                        for p in positions[:2].tolist()]
    assert len(view.annotations(positions, "mask")) == 0


def test_a_missing_class_id_or_box_reads_as_absent() -> None:
    doc = complete({"images": [{"filename": "a.png", "annotations": [
        {"type": "label"}, {"type": "label", "class_id": None, "class_name": "x"}, {"type": "label", "class_id": 4}]}]})
    labels = DatasetView.from_document(doc).annotations(np.array([0]), "label")
    assert labels.has_class_id.tolist() == [False, False, True] and int(labels.class_id[2]) == 4
    assert not labels.has_bbox.any() and np.isnan(labels.bbox).all()
    assert labels.name_code.tolist()[0] == -1


def test_a_worker_loads_the_view_from_the_index_cache_beside_the_file(tmp_path: Path) -> None:
    doc = classification_document(seed=7)
    path = tmp_path / "dataset.json"
    assert len(load_dataset_view(path, "object_detection")["images"]) == 0  # no file yet: an empty dataset
    assert load_dataset_view(path, "object_detection")["task"] == "object_detection"
    atomic_write_json(path, doc)
    first = load_dataset_view(path, "classification")
    deadline = time.monotonic() + 30
    while not cache_path(path).is_file() and time.monotonic() < deadline:  # the cache may be written behind the build
        time.sleep(0.05)
    assert cache_path(path).is_file()  # built once, then mapped back by the next worker
    again = load_dataset_view(path, "classification")
    assert as_dict(first) == as_dict(again) == parsed(doc)


def test_view_of_completes_a_short_test_document() -> None:
    view = view_of({"classes": ["a", "b"], "images": [{"filename": "x.png", "split": ["train"]}]})
    assert view["images"][0]["width"] == 16 and view.subset_positions(0, "train").tolist() == [0]
