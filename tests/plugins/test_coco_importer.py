"""The ``coco`` importer through the real API: folder and ZIP, and hostile annotation files (never a 500)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from modelyard.core.plugin_manager import PluginHost
from modelyard.plugins import coco_importer
from modelyard.testing import check_importer
from tests.api.test_datasets import import_local, upload
from tests.conftest import assert_error
from tests.core.datasets.detection_factories import (
    imported,
    skipped_reasons,
    SCENES,
    coco_document,
    coco_folder,
    detection_project,  # noqa: F401  (fixture)
    expected_boxes,
    scene_image,
    stored_boxes,
)
from tests.core.datasets.factories import write, zip_of_folder


def test_the_importer_reads_boxes_by_category_id(tmp_path: Path) -> None:
    host = PluginHost(disabled=set())
    host.add_plugin(coco_importer, name="coco_importer")
    records = check_importer(host.importers.get("coco"), coco_folder(tmp_path / "coco"))
    by_path = {r.source_path: r for r in records}
    assert set(by_path) == {f"images/{name}" for name in SCENES}
    assert [(b.class_name, list(b.bbox)) for b in by_path["images/a.png"].boxes] == expected_boxes("a.png")
    assert by_path["images/d.png"].boxes == ()


def test_folder_import_stores_pixel_boxes_and_keeps_background_images(client, detection_project: str,
                                                                     import_root: Path) -> None:
    data = imported(client, detection_project, coco_folder(import_root / "coco"))
    assert (data["format"], data["imported"], data["classes"], data["skipped"], data["warnings"]) == (
        "coco", 4, ["car", "dog"], [], [])
    for name in SCENES:
        assert stored_boxes(client, detection_project, f"images_{name}") == expected_boxes(name)
    info = client.get(f"/api/datasets/{detection_project}/images/images_a.png/info").json()["data"]
    assert info["annotations"][0] == {"type": "bbox", "class_id": 0, "class_name": "car", "bbox": [4.0, 4.0, 20.0, 10.0]}


def test_zip_upload_of_a_wrapped_flat_folder(client, detection_project: str, tmp_path: Path) -> None:
    folder = tmp_path / "flat"
    for name, (width, height, _) in SCENES.items():
        write(folder / name, scene_image(name, width, height))
    write(folder / "_annotations.coco.json", json.dumps(coco_document(folder="")).encode())
    response = upload(client, detection_project, zip_of_folder(folder, prefix="export/"))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["format"], data["imported"], data["classes"]) == ("coco", 4, ["car", "dog"])
    assert stored_boxes(client, detection_project, "export_c.png") == expected_boxes("c.png")


def test_zip_upload_with_subset_folders_sets_the_source_split(client, detection_project: str, tmp_path: Path) -> None:
    folder = tmp_path / "rf"
    train = {k: SCENES[k] for k in ("a.png", "b.png", "d.png")}
    coco_folder(folder / "train", train, document=coco_document(train, folder=""))
    for name in train:
        (folder / "train" / "images" / name).rename(folder / "train" / name)
    valid = {"c.png": SCENES["c.png"]}
    coco_folder(folder / "valid", valid, document=coco_document(valid, folder=""))
    (folder / "valid" / "images" / "c.png").rename(folder / "valid" / "c.png")
    response = upload(client, detection_project, zip_of_folder(folder))
    assert response.status_code == 200, response.text
    items = client.get(f"/api/datasets/{detection_project}/images").json()["data"]["items"]
    assert {i["source_path"]: i["split"] for i in items} == {
        "train/a.png": ["train"], "train/b.png": ["train"], "train/d.png": ["train"], "valid/c.png": ["val"]}


def test_crowd_annotations_are_left_out(client, detection_project: str, import_root: Path) -> None:
    doc = coco_document()
    doc["annotations"].append({"id": 99, "image_id": 2, "category_id": 11, "bbox": [0, 0, 30, 30], "iscrowd": 1})
    imported(client, detection_project, coco_folder(import_root / "coco", document=doc))
    assert stored_boxes(client, detection_project, "images_b.png") == expected_boxes("b.png")


def test_unknown_category_and_malformed_annotations_refuse_only_their_image(client, detection_project: str,
                                                                           import_root: Path) -> None:
    doc = coco_document()
    doc["annotations"][0]["category_id"] = 777  # a.png
    doc["annotations"][2]["bbox"] = [1, 2, "x", 4]  # b.png
    doc["annotations"][3]["bbox"] = [1, 2, 3]  # c.png
    data = imported(client, detection_project, coco_folder(import_root / "coco", document=doc))
    skipped = skipped_reasons(data)
    assert "unknown category id 777" in skipped["images/a.png"]
    assert "only numbers" in skipped["images/b.png"]
    assert "4 numbers" in skipped["images/c.png"]
    assert data["imported"] == 1  # d.png, a background image


def test_nan_negative_huge_clipped_and_degenerate_boxes(client, detection_project: str, import_root: Path) -> None:
    folder = coco_folder(import_root / "coco")
    doc = coco_document()
    doc["annotations"][0]["bbox"] = [-5, -5, 20, 10]  # a.png: clipped
    doc["annotations"][1]["bbox"] = [30, 20, 1e300, 1e300]  # a.png: clipped to the image
    doc["annotations"][2]["bbox"] = [10, 10, -3, 8]  # b.png: negative width: degenerate
    doc["annotations"][3]["bbox"] = [100, 100, 5, 5]  # c.png: entirely outside: degenerate
    raw = json.dumps(doc).replace("1e+300", "NaN", 1)  # NaN is not JSON, but Python writes it; refused per image
    (folder / "annotations.json").write_text(raw, encoding="utf-8")
    data = imported(client, detection_project, folder)
    skipped = skipped_reasons(data)
    assert set(skipped) == {"images/a.png", "images/b.png", "images/c.png"}
    assert "non-finite" in skipped["images/a.png"]
    assert "degenerate" in skipped["images/b.png"] and "degenerate" in skipped["images/c.png"]
    doc["annotations"][1]["bbox"] = [30, 20, 1e300, 1e300]
    (folder / "annotations.json").write_text(json.dumps(doc), encoding="utf-8")
    data = imported(client, detection_project, folder, replace=True)
    assert data["warnings"] == [{"path": "images/a.png", "reason": "2 boxes clipped to the image"}]
    assert stored_boxes(client, detection_project, "images_a.png") == [("car", [0.0, 0.0, 15.0, 5.0]),
                                                                      ("dog", [30.0, 20.0, 34.0, 28.0])]


def test_a_huge_integer_coordinate_is_a_reason_not_a_crash(client, detection_project: str, import_root: Path) -> None:
    folder = coco_folder(import_root / "coco")
    raw = json.dumps(coco_document()).replace("[4, 4, 20, 10]", "[4, 4, 2" + "0" * 400 + ", 10]")
    (folder / "annotations.json").write_text(raw, encoding="utf-8")
    assert "too large" in skipped_reasons(imported(client, detection_project, folder))["images/a.png"]


def test_malformed_json_and_wrong_types_are_one_skipped_entry_for_the_file(client, detection_project: str,
                                                                          import_root: Path) -> None:
    folder = coco_folder(import_root / "coco")
    for content, reason in (
        ('{"images": [', "malformed JSON"),
        ('{"images": {"a": 1}, "annotations": []}', "'images' must be a list"),
        ('{"images": [{"id": 1, "file_name": 5}]}', "images[0]"),
        ('{"images": [], "categories": [{"id": 1}]}', "categories[0]"),
        ('{"images": [], "annotations": ["x"]}', "annotations[0]"),
        ('{"images": [{"id": 1, "file_name": "images/a.png"}, {"id": 1, "file_name": "images/b.png"}]}', "appears twice"),
        ('{"images": [], "x": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
        ("\udcff{", "not a valid COCO file"),
    ):
        (folder / "annotations.json").write_bytes(content.encode("utf-8", "surrogateescape"))
        error = assert_error(import_local(client, detection_project, folder, format="coco"), 422, "VALIDATION_ERROR")
        assert error["details"]["skipped"][0]["path"] == "annotations.json", content[:40]
        assert reason in error["details"]["skipped"][0]["reason"], content[:40]


def test_missing_images_and_orphan_annotations_are_reported(client, detection_project: str, import_root: Path) -> None:
    folder = coco_folder(import_root / "coco")
    (folder / "images" / "b.png").unlink()
    doc = coco_document()
    doc["annotations"].append({"id": 50, "image_id": 404, "category_id": 10, "bbox": [1, 1, 2, 2]})
    (folder / "annotations.json").write_text(json.dumps(doc), encoding="utf-8")
    data = imported(client, detection_project, folder)
    skipped = skipped_reasons(data)
    assert skipped["images/b.png"] == "file not found"
    assert "refer to image ids not in 'images'" in skipped["annotations.json"]
    assert data["imported"] == 3


def test_file_names_that_leave_the_dataset_are_refused(client, detection_project: str, import_root: Path,
                                                       tmp_path: Path) -> None:
    secret = write(tmp_path / "secret.png", scene_image("secret", 8, 8))
    folder = coco_folder(import_root / "coco")
    write(import_root / "beside.png", scene_image("beside", 8, 8))
    os.symlink(secret, folder / "images" / "link.png")
    doc = coco_document()
    for number, name in enumerate(["../beside.png", str(secret), "images/link.png", "..\\beside.png", "C:/x.png"],
                                  start=100):
        doc["images"].append({"id": number, "file_name": name})
    (folder / "annotations.json").write_text(json.dumps(doc), encoding="utf-8")
    data = imported(client, detection_project, folder)
    skipped = data["skipped"]
    assert sum("is not a relative path inside the dataset" in s["reason"] for s in skipped) == 4
    assert {"path": "images/link.png", "reason": "symbolic link (links are not followed)"} in skipped
    assert data["imported"] == 4
    names = {i["source_path"] for i in client.get(f"/api/datasets/{detection_project}/images").json()["data"]["items"]}
    assert names == {f"images/{name}" for name in SCENES}


def test_auto_only_considers_importers_of_the_task(client, project_id: str, detection_project: str,
                                                   import_root: Path) -> None:
    folder = coco_folder(import_root / "coco")
    classification = imported(client, project_id, folder)  # classification: COCO is never chosen
    assert classification["format"] == "imagefolder"
    error = assert_error(import_local(client, project_id, folder, format="coco"), 422, "VALIDATION_ERROR")
    assert "coco" not in error["details"]["available"] and "imagefolder" in error["details"]["available"]
    error = assert_error(import_local(client, detection_project, folder, format="imagefolder"), 422, "VALIDATION_ERROR")
    assert set(error["details"]["available"]) == {"coco", "voc", "yolo"}
    assert error["details"]["field"] == "format"
    assert imported(client, detection_project, folder)["format"] == "coco"
