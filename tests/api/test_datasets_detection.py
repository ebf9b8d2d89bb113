"""A detection dataset through the API: class counts of boxes and images, boxes in image info, filter, num_boxes sort, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.api.test_datasets import import_local
from tests.core.datasets.detection_factories import (
    CLASSES,
    coco_document,
    coco_folder,
    detection_project,  # noqa: F401  (fixture)
)

#: 30 images: class "car" in most, "dog" in some, "eel" rare, 6 background images.
MANY: dict[str, tuple[int, int, list[tuple[str, list[float]]]]] = {}
for _i in range(30):
    _boxes: list[tuple[str, list[float]]] = []
    if _i % 5:
        _boxes += [("car", [1, 1, 5, 5])] * (1 + _i % 3)
    if _i % 3 == 0 and _i % 5:
        _boxes.append(("dog", [6, 6, 4, 4]))
    if _i in (7, 8, 11, 13, 14, 17):
        _boxes.append(("eel", [2, 8, 3, 3]))
    MANY[f"img_{_i:02d}.png"] = (16, 16, _boxes)


@pytest.fixture
def detection_dataset(client, detection_project: str, import_root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("tests.core.datasets.detection_factories.CLASSES", [*CLASSES, "eel"])
    folder = coco_folder(import_root / "many", MANY)
    response = import_local(client, detection_project, folder)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["imported"] == 30
    return detection_project


def _names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["filename"] for item in response.json()["data"]["items"]]


def test_dataset_info_counts_boxes_and_images_per_class(client, detection_dataset: str) -> None:
    data = client.get(f"/api/datasets/{detection_dataset}").json()["data"]
    boxes = {name: sum(1 for _, _, b in MANY.values() for c, _ in b if c == name) for name in ("car", "dog", "eel")}
    images = {name: sum(1 for _, _, b in MANY.values() if any(c == name for c, _ in b)) for name in ("car", "dog", "eel")}
    assert data["task"] == "object_detection" and data["classes"] == ["car", "dog", "eel"]
    assert data["class_counts"] == boxes and data["class_image_counts"] == images
    assert data["num_boxes"] == sum(boxes.values()) and data["num_background"] == 6
    assert data["num_images"] == 30 and data["num_unlabelled"] == 0


def test_image_info_lists_the_boxes_and_items_their_count(client, detection_dataset: str) -> None:
    info = client.get(f"/api/datasets/{detection_dataset}/images/images_img_03.png/info").json()["data"]
    assert info["annotations"] == [
        {"type": "bbox", "class_id": 0, "class_name": "car", "bbox": [1.0, 1.0, 5.0, 5.0]},
        {"type": "bbox", "class_id": 1, "class_name": "dog", "bbox": [6.0, 6.0, 4.0, 4.0]},
    ]
    assert info["num_boxes"] == 2 and info["class_name"] is None
    items = client.get(f"/api/datasets/{detection_dataset}/images", params={"page_size": 500}).json()["data"]["items"]
    assert {item["filename"]: item["num_boxes"] for item in items}["images_img_00.png"] == 0


def test_filter_class_matches_images_with_any_box_of_it(client, detection_dataset: str) -> None:
    eels = _names(client.get(f"/api/datasets/{detection_dataset}/images", params={"filter_class": "eel"}))
    assert eels == [f"images_img_{i:02d}.png" for i in (7, 8, 11, 13, 14, 17)]
    dogs = _names(client.get(f"/api/datasets/{detection_dataset}/images", params={"filter_class": "dog", "page_size": 500}))
    assert dogs == sorted(f"images_{n}" for n, (_, _, b) in MANY.items() if any(c == "dog" for c, _ in b))
    assert _names(client.get(f"/api/datasets/{detection_dataset}/images", params={"filter_class": "cat"})) == []


def test_sort_by_num_boxes_both_ways(client, detection_dataset: str) -> None:
    def counts(order: str) -> list[tuple[int, str]]:
        items = client.get(f"/api/datasets/{detection_dataset}/images",
                           params={"sort_by": "num_boxes", "sort_order": order, "page_size": 500}).json()["data"]["items"]
        return [(item["num_boxes"], item["filename"]) for item in items]

    ascending = counts("asc")
    assert ascending == sorted(ascending) and ascending[0][0] == 0 and ascending[-1][0] == 4
    assert counts("desc") == ascending[::-1]


def test_multilabel_split_puts_every_image_somewhere_and_every_class_in_train(client, detection_dataset: str) -> None:
    body = {"name": "s", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 5}
    preview = client.get(f"/api/splits/{detection_dataset}/preview", params={"train": 0.6, "val": 0.2, "test": 0.2, "seed": 5})
    created = client.post(f"/api/splits/{detection_dataset}", json=body)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert {k: data[k] for k in ("stats", "per_class", "warnings")} == preview.json()["data"]
    assert data["stats"] == {"train": 18, "val": 6, "test": 6, "none": 0}
    assert all(data["per_class"][name]["train"] > 0 for name in ("car", "dog", "eel"))
    assert data["per_class"]["eel"] == {"train": 4, "val": 1, "test": 1, "none": 0}
    detail = client.get(f"/api/splits/{detection_dataset}/0").json()["data"]
    assert detail["stats"] == data["stats"] and detail["per_class"] == data["per_class"]
    background = [i for i in client.get(f"/api/datasets/{detection_dataset}/images", params={"page_size": 500})
                  .json()["data"]["items"] if i["num_boxes"] == 0]
    assert len(background) == 6 and all(i["split"][0] != "none" for i in background)
    client.delete(f"/api/splits/{detection_dataset}/0")
    again = client.post(f"/api/splits/{detection_dataset}", json=body).json()["data"]
    assert again["stats"] == data["stats"] and again["per_class"] == data["per_class"]


def test_a_second_import_merges_classes_and_rewrites_box_class_ids(client, services, detection_project: str,
                                                                    import_root: Path) -> None:
    first = {"b.png": (16, 16, [("dog", [1, 1, 4, 4])])}
    folder = coco_folder(import_root / "one", first)
    assert import_local(client, detection_project, folder).status_code == 200
    second = {"a.png": (16, 16, [("car", [2, 2, 4, 4])])}
    folder = coco_folder(import_root / "two", second, document=coco_document(second))
    data = import_local(client, detection_project, folder).json()["data"]
    assert data["classes"] == ["car", "dog"]
    dataset = json.loads(services.workspace.dataset_json(detection_project).read_text(encoding="utf-8"))
    ids = {a["class_name"]: a["class_id"] for image in dataset["images"] for a in image["annotations"]}
    assert ids == {"car": 0, "dog": 1}

