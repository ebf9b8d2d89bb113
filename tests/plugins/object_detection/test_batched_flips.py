"""A flip-only pipeline is applied to a detection batch at once, with exactly the per-image result."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelyard.core.training.augmentations import compose_augmentations
from modelyard.core.training.config import Augmentation
from modelyard.core.training.worker.data import ImageDataset
from modelyard.plugins.object_detection import OBJECT_DETECTION
from modelyard.plugins.object_detection.runtime import DetectionRuntime

RUNTIME = DetectionRuntime(OBJECT_DETECTION)
HEIGHT, WIDTH = 40, 64
PIPELINES = {
    "left-right": [("RandomHorizontalFlip", 0.5)],
    "both axes": [("RandomHorizontalFlip", 0.5), ("RandomVerticalFlip", 0.3)],
    "twice the same axis": [("RandomHorizontalFlip", 0.5), ("RandomHorizontalFlip", 0.7)],
    "always": [("RandomVerticalFlip", 1.0)],
}


def random_targets(count: int) -> list[dict[str, torch.Tensor]]:
    """Boxes with fractional corners, some touching or crossing the edges, some thinner than a pixel, some images empty."""
    generator = torch.Generator().manual_seed(7)
    targets = []
    for _ in range(count):
        n = int(torch.randint(0, 5, (), generator=generator))
        corner = torch.rand(n, 2, generator=generator) * torch.tensor([WIDTH + 8.0, HEIGHT + 8.0]) - 4
        sides = torch.rand(n, 2, generator=generator) * 20 * (torch.rand(n, 1, generator=generator) > 0.15)
        targets.append({"boxes": torch.cat([corner, corner + sides], 1),
                        "labels": torch.randint(0, 3, (n,), generator=generator)})
    return targets


def dataset(pipeline: list[tuple[str, float]], count: int, batched: bool) -> ImageDataset:
    specs = [Augmentation(name=name, params={"p": p}) for name, p in pipeline]
    transform = compose_augmentations(specs, [HEIGHT, WIDTH], "train")
    pixels = torch.randint(0, 256, (count, 3, HEIGHT, WIDTH), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    data = ImageDataset([f"{i}.png" for i in range(count)], RUNTIME.target_store(random_targets(count)), Path("."),
                        (HEIGHT, WIDTH), 3, transform, cached=pixels, seed=11, runtime=RUNTIME)
    if not batched:
        data.flips = None  # the per-image path: torchvision's transforms, then clamp_and_sanitize
    return data


@pytest.mark.parametrize("pipeline", PIPELINES.values(), ids=PIPELINES.keys())
def test_batched_flips_equal_torchvision_image_by_image(pipeline: list[tuple[str, float]]) -> None:
    count = 48
    batched, reference = dataset(pipeline, count, True), dataset(pipeline, count, False)
    assert batched.flips is not None
    for epoch in range(3):
        keys = [(epoch, i) for i in torch.randperm(count, generator=torch.Generator().manual_seed(epoch)).tolist()]
        for begin in range(0, count, 16):
            images, targets = batched.__getitems__(keys[begin:begin + 16])
            expected_images, expected_targets = reference.__getitems__(keys[begin:begin + 16])
            assert torch.equal(images, expected_images)
            assert len(targets) == len(expected_targets)
            for got, want in zip(targets, expected_targets, strict=True):
                assert got["boxes"].dtype == torch.float32
                assert torch.equal(got["boxes"], want["boxes"]) and torch.equal(got["labels"], want["labels"])


def test_the_cached_pixels_and_stored_boxes_are_not_changed_by_a_batch() -> None:
    data = dataset([("RandomHorizontalFlip", 1.0)], 8, True)
    pixels = data.cached.clone()
    boxes = [data.targets.item(i)["boxes"].clone() for i in range(8)]
    data.__getitems__([(0, i) for i in range(8)])
    assert torch.equal(data.cached, pixels)
    assert all(torch.equal(data.targets.item(i)["boxes"], boxes[i]) for i in range(8))


def test_pipelines_with_more_than_flips_go_image_by_image() -> None:
    specs = [Augmentation(name="RandomHorizontalFlip", params={"p": 0.5}), Augmentation(name="ColorJitter",
                                                                                         params={"brightness": 0.2})]
    from modelyard.core.training.augmentations import flip_plan

    assert flip_plan(compose_augmentations(specs, [HEIGHT, WIDTH], "train")) is None
    assert flip_plan(compose_augmentations(specs[:1], [HEIGHT, WIDTH], "train")) == [(-1, 0.5)]
