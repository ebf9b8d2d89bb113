"""The ``yolo`` importer through the real API: folder and ZIP, class files, and hostile label files (never a 500)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from modelyard.core.plugin_manager import PluginHost
from modelyard.plugins import yolo_importer
from modelyard.testing import check_importer
from tests.api.test_datasets import import_local, upload
from tests.conftest import assert_error
from tests.core.datasets.detection_factories import (
    imported,
    skipped_reasons,
    SCENES,
    detection_project,  # noqa: F401  (fixture)
    expected_boxes,
    stored_boxes,
    yolo_folder,
)
from tests.core.datasets.factories import write, zip_of_folder


def _close(got: list[tuple[str, list[float]]], want: list[tuple[str, list[float]]]) -> bool:
    return [c for c, _ in got] == [c for c, _ in want] and all(
        b == pytest.approx(w, abs=1e-3) for (_, b), (_, w) in zip(got, want))


def test_the_importer_converts_normalised_boxes_to_pixels(tmp_path: Path) -> None:
    host = PluginHost(disabled=set())
    host.add_plugin(yolo_importer, name="yolo_importer")
    records = check_importer(host.importers.get("yolo"), yolo_folder(tmp_path / "y"))
    by_path = {r.source_path: r for r in records}
    assert set(by_path) == {f"images/{name}" for name in SCENES}
    assert _close([(b.class_name, list(b.bbox)) for b in by_path["images/a.png"].boxes], expected_boxes("a.png"))
    assert by_path["images/d.png"].boxes == ()


def test_folder_import(client, detection_project: str, import_root: Path) -> None:
    data = imported(client, detection_project, yolo_folder(import_root / "y"))
    assert (data["format"], data["imported"], data["classes"], data["skipped"]) == ("yolo", 4, ["car", "dog"], [])
    for name in SCENES:
        assert _close(stored_boxes(client, detection_project, f"images_{name}"), expected_boxes(name))


def test_zip_upload_of_the_ultralytics_layout_with_subsets(client, detection_project: str, tmp_path: Path) -> None:
    folder = yolo_folder(tmp_path / "y", names_yaml="path: /etc\ntrain: ../../secret\nnames:\n  0: car\n  1: dog\n")
    for kind in ("images", "labels"):
        (folder / kind / "train").mkdir()
        (folder / kind / "val").mkdir()
    for name in ("a", "b", "c", "d"):
        subset = "val" if name == "c" else "train"
        (folder / "images" / f"{name}.png").rename(folder / "images" / subset / f"{name}.png")
        if (folder / "labels" / f"{name}.txt").exists():
            (folder / "labels" / f"{name}.txt").rename(folder / "labels" / subset / f"{name}.txt")
    response = upload(client, detection_project, zip_of_folder(folder, prefix="dataset/"))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert (data["format"], data["imported"], data["classes"]) == ("yolo", 4, ["car", "dog"])
    items = client.get(f"/api/datasets/{detection_project}/images").json()["data"]["items"]
    assert {i["filename"]: i["split"] for i in items} == {
        "images_train_a.png": ["train"], "images_train_b.png": ["train"], "images_train_d.png": ["train"],
        "images_val_c.png": ["val"]}
    assert _close(stored_boxes(client, detection_project, "images_val_c.png"), expected_boxes("c.png"))


def test_classes_txt_and_roboflow_layout(client, detection_project: str, import_root: Path) -> None:
    folder = yolo_folder(import_root / "y")
    (folder / "data.yaml").unlink()
    (folder / "classes.txt").write_text("car\ndog\n", encoding="utf-8")
    (folder / "valid").mkdir()
    (folder / "images").rename(folder / "valid" / "images")
    (folder / "labels").rename(folder / "valid" / "labels")
    data = imported(client, detection_project, folder)
    assert (data["format"], data["imported"]) == ("yolo", 4)
    assert _close(stored_boxes(client, detection_project, "valid_images_c.png"), expected_boxes("c.png"))


def test_exif_rotated_images_get_boxes_in_displayed_pixels(client, detection_project: str, import_root: Path) -> None:
    folder = yolo_folder(import_root / "y", scenes={})
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x20, displayed 20x40
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (10, 200, 30)).save(buffer, format="JPEG", exif=exif.tobytes())
    write(folder / "images" / "r.jpg", buffer.getvalue())
    write(folder / "labels" / "r.txt", b"0 0.5 0.5 0.5 0.25\n")
    imported(client, detection_project, folder)
    info = client.get(f"/api/datasets/{detection_project}/images/images_r.jpg/info").json()["data"]
    assert (info["width"], info["height"]) == (20, 40)
    assert info["annotations"][0]["bbox"] == [5.0, 15.0, 10.0, 10.0]


@pytest.mark.parametrize(("content", "reason"), [
    (b"0 0.5 0.5 0.2\n", "expected 5 columns"),
    (b"0 0.5 0.5 0.2 0.2 0.1 0.1\n", "expected 5 columns"),
    (b"zero 0.5 0.5 0.2 0.2\n", "must be an integer"),
    (b"0 0.5 nan 0.2 0.2\n", "non-finite"),
    (b"0 0.5 0.5 inf 0.2\n", "non-finite"),
    (b"7 0.5 0.5 0.2 0.2\n", "class index 7 has no name"),
    (b"-1 0.5 0.5 0.2 0.2\n", "class index -1 has no name"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
])
def test_a_malformed_label_file_is_a_skipped_entry_naming_it(client, detection_project: str, import_root: Path,
                                                            content: bytes, reason: str) -> None:
    folder = yolo_folder(import_root / "y")
    (folder / "labels" / "b.txt").write_bytes(content)
    data = imported(client, detection_project, folder)
    assert reason in skipped_reasons(data)["labels/b.txt"] and data["imported"] == 3


def test_boxes_outside_the_image_are_clipped_and_degenerate_ones_refused(client, detection_project: str,
                                                                        import_root: Path) -> None:
    folder = yolo_folder(import_root / "y")
    (folder / "labels" / "a.txt").write_text("0 0.0 0.0 0.5 0.5\n1 1e300 0.5 0.5 0.5\n", encoding="utf-8")
    (folder / "labels" / "b.txt").write_text("0 0.5 0.5 -0.2 0.2\n", encoding="utf-8")
    (folder / "labels" / "c.txt").write_text("1 0.5 0.5 1.5 1.5\n", encoding="utf-8")
    data = imported(client, detection_project, folder)
    skipped = skipped_reasons(data)
    assert "degenerate" in skipped["images/a.png"] and "degenerate" in skipped["images/b.png"]
    assert data["warnings"] == [{"path": "images/c.png", "reason": "1 box clipped to the image"}]
    assert stored_boxes(client, detection_project, "images_c.png") == [("dog", [0.0, 0.0, 32.0, 32.0])]


def test_a_label_file_that_is_a_directory_or_a_link_is_refused(client, detection_project: str, import_root: Path,
                                                                tmp_path: Path) -> None:
    folder = yolo_folder(import_root / "y")
    (folder / "labels" / "a.txt").unlink()
    (folder / "labels" / "a.txt").mkdir()
    secret = write(tmp_path / "secret.txt", b"0 0.5 0.5 0.5 0.5\n")
    (folder / "labels" / "b.txt").unlink()
    os.symlink(secret, folder / "labels" / "b.txt")
    skipped = skipped_reasons(imported(client, detection_project, folder))
    assert skipped["labels/a.txt"] == "label file not a regular file (directory)"
    assert skipped["labels/b.txt"] == "label file symbolic link (links are not followed)"


@pytest.mark.parametrize(("yaml_text", "reason"), [
    ("names: [car, dog", "not valid YAML"),
    ("names: !!python/object/apply:os.system ['touch /tmp/pwned']\n", "not valid YAML"),
    ("nc: 2\n", "no 'names'"),
    ("names: {0: car, 5: dog}\n", "keys 0, 1, 2"),
    ("names: [[car], dog]\n", "must list class names"),
    ("- just\n- a list\n", "no 'names'"),
    ("a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nnames: [*b, *b]\n", "must list class names"),
])
def test_a_bad_class_file_is_a_clear_422(client, detection_project: str, import_root: Path, yaml_text: str,
                                         reason: str) -> None:
    folder = yolo_folder(import_root / "y", names_yaml=yaml_text)
    error = assert_error(import_local(client, detection_project, folder), 422, "VALIDATION_ERROR")
    assert error["details"]["skipped"][0]["path"] == "data.yaml"
    assert reason in error["details"]["skipped"][0]["reason"]
    assert not Path("/tmp/pwned").exists()
