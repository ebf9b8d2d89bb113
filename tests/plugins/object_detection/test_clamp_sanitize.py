"""``clamp_and_sanitize`` (the detection runtime's augmentation fast path) equals torchvision's two transforms."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from modelyard.plugins.object_detection.runtime import clamp_and_sanitize

TRANSFORMS = [v2.RandomHorizontalFlip(1.0), v2.RandomAffine(30, translate=(0.3, 0.3), scale=(0.5, 1.5)),
              v2.RandomRotation(45), v2.RandomResizedCrop((50, 100)), v2.RandomPerspective(0.6, p=1.0),
              v2.RandomCrop((50, 100), padding=10)]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: type(t).__name__)
def test_same_boxes_and_mask_as_clamp_then_sanitize_bounding_boxes(transform: v2.Transform) -> None:
    torch.manual_seed(0)
    for _ in range(150):
        count = int(torch.randint(0, 6, ()))
        corner = torch.rand(count, 2) * torch.tensor([120.0, 70.0]) - 10  # some start outside the 100x50 canvas
        sides = torch.rand(count, 2) * 40 * (torch.rand(count, 1) > 0.1)  # and some are empty
        boxes = tv_tensors.BoundingBoxes(torch.cat([corner, corner + sides], 1), format="XYXY", canvas_size=(50, 100))
        labels = torch.randint(0, 4, (count,))
        sample = transform({"image": torch.zeros((3, 50, 100), dtype=torch.uint8), "boxes": boxes, "labels": labels})
        expected = v2.SanitizeBoundingBoxes(min_size=1.0)(v2.ClampBoundingBoxes()(sample))
        kept, keep = clamp_and_sanitize(sample["boxes"])
        assert kept.dtype == torch.float32
        assert torch.equal(kept, expected["boxes"].as_subclass(torch.Tensor).float())
        assert torch.equal(sample["labels"][keep], expected["labels"])
