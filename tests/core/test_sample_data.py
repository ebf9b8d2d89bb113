"""Generated sample data: ``generate_shapes_detection`` writes a valid, deterministic COCO set with tight boxes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from modelyard.core.sample_data import SHAPES, generate_shapes_detection


def read_coco(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "annotations.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("shapes-detection")
    summary = generate_shapes_detection(folder, num_images=120, size=64, seed=3)
    return folder, summary


def test_detection_set_is_deterministic_for_a_seed(made: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    folder, summary = made
    again = generate_shapes_detection(tmp_path / "again", num_images=120, size=64, seed=3)
    assert {k: v for k, v in again.items() if k != "path"} == {k: v for k, v in summary.items() if k != "path"}
    assert read_coco(tmp_path / "again") == read_coco(folder)
    for name in ("shapes_00000.png", "shapes_00077.png"):
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes()
    other = generate_shapes_detection(tmp_path / "other", num_images=120, size=64, seed=4)
    assert read_coco(tmp_path / "other")["annotations"] != read_coco(folder)["annotations"] and other["seed"] == 4


def test_detection_set_is_valid_coco(made: tuple[Path, dict[str, Any]]) -> None:
    from faster_coco_eval import COCO

    folder, summary = made
    coco = read_coco(folder)
    assert coco["categories"] == [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    assert [im["id"] for im in coco["images"]] == list(range(1, 121))
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    for im in coco["images"]:
        with Image.open(folder / im["file_name"]) as image:
            assert image.size == (im["width"], im["height"]) == (64, 64) and image.mode == "RGB"
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert all(isinstance(v, int) for v in ann["bbox"]) and w > 0 and h > 0
        assert ann["area"] == w * h and ann["iscrowd"] == 0 and ann["category_id"] in (1, 2, 3, 4)
    loaded = COCO(str(folder / "annotations.json"))  # the evaluation backend reads it as it is
    assert len(loaded.getImgIds()) == 120 and len(loaded.getAnnIds()) == summary["num_boxes"]
    assert summary["num_boxes"] == len(coco["annotations"])
    assert summary["classes"] == {s: sum(a["category_id"] == i + 1 for a in coco["annotations"])
                                  for i, s in enumerate(SHAPES)}


def test_images_hold_zero_to_four_separate_shapes_and_a_few_none(made: tuple[Path, dict[str, Any]]) -> None:
    folder, summary = made
    coco = read_coco(folder)
    per_image: dict[int, list[list[int]]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann["bbox"])
    counts = [len(boxes) for boxes in per_image.values()]
    assert max(counts) <= 4 and {1, 2, 3} <= set(counts)
    assert counts.count(0) == summary["num_background"] >= 1  # about 3 % background images
    for boxes in per_image.values():
        for i, (x, y, w, h) in enumerate(boxes):
            assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64
            for ox, oy, ow, oh in boxes[i + 1:]:  # no two boxes overlap
                assert x + w <= ox or ox + ow <= x or y + h <= oy or oy + oh <= y


def test_boxes_are_tight_around_the_drawn_shapes(made: tuple[Path, dict[str, Any]]) -> None:
    """Every pixel far from the background colour is in a box, and every box edge touches such a pixel."""
    folder, _ = made
    coco = read_coco(folder)
    for im in coco["images"][:60]:
        pixels = np.asarray(Image.open(folder / im["file_name"]), dtype=np.int32)
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == im["id"]]
        outside = np.ones(pixels.shape[:2], dtype=bool)
        for x, y, w, h in boxes:
            outside[y:y + h, x:x + w] = False
        background = np.median(pixels[outside], axis=0)
        shape = np.abs(pixels - background).sum(axis=2) > 100  # shapes differ from it by > 200 before the noise
        assert not (shape & outside).any(), im["file_name"]
        for x, y, w, h in boxes:
            inside = shape[y:y + h, x:x + w]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), (im, x, y, w, h)


def test_detection_generator_refuses_canvases_too_small_for_several_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32 px"):
        generate_shapes_detection(tmp_path, num_images=1, size=16)
