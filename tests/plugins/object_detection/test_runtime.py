"""The detection runtime (plugins/object_detection/runtime.py): targets, augmentation, padding, prediction output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from modelyard.core.errors import CorruptDataError
from modelyard.plugins.object_detection import OBJECT_DETECTION
from modelyard.plugins.object_detection.runtime import DetectionRuntime
from tests.core.datasets.documents import complete, view_of

RUNTIME = DetectionRuntime(OBJECT_DETECTION)
CLASSES = ["circle", "square"]


def _image(name: str, subset: str, boxes: list[tuple[int, list[float]]], size: tuple[int, int] = (200, 100)) -> dict:
    return {"filename": name, "width": size[0], "height": size[1], "split": [subset],
            "annotations": [{"type": "bbox", "class_id": c, "class_name": CLASSES[c], "bbox": b} for c, b in boxes]}


DATASET = view_of({"task": "object_detection", "classes": CLASSES, "split_names": ["s"], "images": [
    _image("a.png", "train", [(0, [10, 20, 40, 30]), (1, [100, 0, 100, 100])]),
    _image("empty.png", "train", []),  # a background image trains too
    _image("v.png", "val", [(1, [0, 0, 50, 50])]),
]})


def test_samples_scale_xywh_boxes_to_xyxy_in_the_training_size_and_keep_background_images() -> None:
    samples = RUNTIME.samples(DATASET, 0, "train", (50, 100))  # (height, width): half the source's pixels
    assert [name for name, _ in samples] == ["a.png", "empty.png"]
    target = samples[0][1]
    assert target["boxes"].tolist() == [[5.0, 10.0, 25.0, 25.0], [50.0, 0.0, 100.0, 50.0]]
    assert target["labels"].tolist() == [0, 1]
    assert samples[1][1]["boxes"].shape == (0, 4)


def test_a_box_annotation_that_is_not_a_box_is_corrupt_data() -> None:
    for annotation in ({"type": "bbox", "class_id": 5, "bbox": [0, 0, 1, 1]},  # no such class
                       {"type": "bbox", "class_id": 0, "bbox": [0, 0, 1]}):  # not four numbers
        broken = complete({"classes": CLASSES, "split_names": ["s"],
                           "images": [{**_image("x.png", "train", []), "annotations": [annotation]}]})
        with pytest.raises(CorruptDataError, match="x.png|dataset.json is corrupt"):  # three numbers: no box at all
            RUNTIME.samples(broken, 0, "train", (50, 100))


def test_a_horizontal_flip_moves_the_boxes_with_the_pixels() -> None:
    image = torch.zeros((3, 50, 100), dtype=torch.uint8)
    image[:, 10:25, 5:25] = 255
    target = {"boxes": torch.tensor([[5.0, 10.0, 25.0, 25.0]]), "labels": torch.tensor([0])}
    flipped, moved = RUNTIME.augment(v2.RandomHorizontalFlip(p=1.0), image, target)
    assert moved["boxes"].tolist() == [[75.0, 10.0, 95.0, 25.0]] and moved["labels"].tolist() == [0]
    assert int(flipped[0, 15, 80]) == 255 and int(flipped[0, 15, 10]) == 0


def test_a_crop_that_leaves_a_box_out_drops_it_and_its_label() -> None:
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [60.0, 30.0, 90.0, 45.0]]), "labels": torch.tensor([0, 1])}
    affine = v2.RandomAffine(degrees=0, translate=(0.5, 0.0))
    torch.manual_seed(3)
    _, moved = RUNTIME.augment(affine, torch.zeros((3, 50, 100), dtype=torch.uint8), target)
    assert moved["boxes"].shape[0] == moved["labels"].shape[0] <= 2
    assert bool((moved["boxes"][:, 2] > moved["boxes"][:, 0]).all())  # every kept box has an area


def test_padding_items_are_marked_so_no_metric_counts_them() -> None:
    store = RUNTIME.target_store([s for _, s in RUNTIME.samples(DATASET, 0, "val", (50, 100))], pad=2)
    assert len(store) == 3 and not store.item(0).get("ignore") and store.item(1)["ignore"] and store.item(2)["ignore"]
    assert [t.get("ignore", False) for t in store.batch([0, 2])] == [False, True]


def test_predictions_are_the_boxes_above_the_threshold_in_the_sent_images_pixels() -> None:
    output = {"boxes": np.array([[10, 10, 30, 20], [0, 0, 5, 5]], dtype=np.float32),
              "scores": np.array([0.4, 0.9], dtype=np.float32), "labels": np.array([1, 0])}
    answer = RUNTIME.predictions(output, CLASSES, (200, 100), {"input_size": (50, 100), "score_threshold": 0.3})
    assert answer == [{"class_id": 0, "class_name": "circle", "score": pytest.approx(0.9), "bbox": [0.0, 0.0, 10.0, 10.0]},
                      {"class_id": 1, "class_name": "square", "score": pytest.approx(0.4),
                       "bbox": [20.0, 20.0, 40.0, 20.0]}]
    assert len(RUNTIME.predictions(output, CLASSES, (200, 100), {"input_size": (50, 100)})) == 1  # default 0.5
