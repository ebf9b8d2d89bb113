"""Detection makes a subset's targets from the index's annotation columns, exactly as the dict-per-image reading did.

The oracle is the code it replaced (tests/core/datasets/reference_samples.py),
run on the parsed ``dataset.json``: same images in the same order, and targets
with the same dtypes, shapes and values, bit for bit.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import torch

from modelyard.core.datasets.view import DatasetView
from modelyard.core.errors import CorruptDataError
from modelyard.plugins.object_detection import OBJECT_DETECTION
from modelyard.plugins.object_detection.runtime import DetectionRuntime
from tests.core.datasets import reference_samples as reference
from tests.core.datasets.documents import SPLIT_VALUES, detection_document

RUNTIME = DetectionRuntime(OBJECT_DETECTION)
SEEDS = range(5)
SIZES = [(64, 64), (50, 100), (333, 127)]


def views(seed: int) -> tuple[dict, DatasetView]:
    doc = detection_document(seed)
    return json.loads(json.dumps(doc)), DatasetView.from_document(doc)


def assert_same_targets(found: list[tuple[str, Any]], expected: list[tuple[str, Any]]) -> None:
    assert [name for name, _ in found] == [name for name, _ in expected]
    for (_, got), (_, want) in zip(found, expected, strict=True):
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert got[key].dtype == value.dtype and got[key].shape == value.shape
                assert torch.equal(got[key], value), key
            else:
                assert got[key] == value and type(got[key][0]) is type(value[0]), key


@pytest.mark.parametrize("seed", SEEDS)
def test_samples_equal_the_dict_readings_for_every_split_subset_and_size(seed: int) -> None:
    doc, view = views(seed)
    for split_index in range(len(doc["split_names"]) + 1):
        for subset in SPLIT_VALUES:
            for size in SIZES:
                assert_same_targets(RUNTIME.samples(view, split_index, subset, size),
                                    reference.detection_samples(doc, split_index, subset, size))
    counts = {len(target["boxes"]) for _, target in RUNTIME.samples(view, 0, "train", (64, 64))}
    assert 0 in counts and max(counts) >= 3  # background images and several boxes are both covered


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluation_samples_equal_the_dict_readings_whatever_classes_the_model_knows(seed: int) -> None:
    doc, view = views(seed)
    for model_classes in (doc["classes"], doc["classes"][::-1], ["square", "other"], []):
        for subset in ("train", "val", "test"):
            found, skipped = RUNTIME.evaluation_samples(view, 1, subset, (50, 100), model_classes)
            expected, expected_skipped = reference.detection_evaluation_samples(doc, 1, subset, (50, 100), model_classes)
            assert skipped == expected_skipped
            assert_same_targets(found, expected)


@pytest.mark.parametrize("broken", [
    {"type": "bbox", "class_id": 3, "bbox": [0, 0, 1, 1]},  # past the classes
    {"type": "bbox", "class_id": -2, "bbox": [0, 0, 1, 1]},
    {"type": "bbox", "bbox": [0, 0, 1, 1]},  # no class id
    {"type": "bbox", "class_id": 0},  # no box
    {"type": "bbox", "class_id": 0, "bbox": None},
    "no size",
], ids=["past-the-classes", "negative", "no-class-id", "no-box", "null-box", "no-size"])
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_a_broken_image_is_the_same_error_on_the_same_image(seed: int, broken: dict | str) -> None:
    doc = detection_document(seed)
    for image in random.Random(seed).sample(doc["images"], 4):
        if broken == "no size":
            image["width"] = 0
        else:
            image["annotations"].append(broken)
    parsed, view = json.loads(json.dumps(doc)), DatasetView.from_document(doc)
    raised = 0
    for subset in SPLIT_VALUES:
        try:
            expected = reference.detection_samples(parsed, 0, subset, (64, 64))
        except CorruptDataError as error:
            raised += 1
            with pytest.raises(CorruptDataError) as found:
                RUNTIME.samples(view, 0, subset, (64, 64))
            assert found.value.message == error.message
        else:
            assert_same_targets(RUNTIME.samples(view, 0, subset, (64, 64)), expected)
    assert raised


def test_each_image_owns_its_tensors() -> None:
    _, view = views(0)
    samples = RUNTIME.samples(view, 0, "train", (64, 64))
    boxed = [target for _, target in samples if len(target["boxes"])]
    boxed[0]["boxes"].add_(1000)
    boxed[0]["labels"].fill_(9)
    again = RUNTIME.samples(view, 0, "train", (64, 64))
    assert torch.equal(boxed[1]["boxes"], [t for _, t in again if len(t["boxes"])][1]["boxes"])
    assert not (boxed[1]["labels"] == 9).all()
    assert boxed[0]["boxes"].untyped_storage().data_ptr() != boxed[1]["boxes"].untyped_storage().data_ptr()
