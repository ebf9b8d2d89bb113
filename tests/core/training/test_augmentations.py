"""Augmentations: an allow-list of torchvision.transforms.v2 names, validated by building and applying them."""

from __future__ import annotations

import pytest
import torch

from modelyard.core.errors import ValidationError
from modelyard.core.training.augmentations import ALLOWED, compose_augmentations, validate_augmentations
from modelyard.core.training.config import Augmentation

SIZE = (24, 24)
FIELD = "config.data.augmentations.train"


def specs(*items: tuple[str, dict]) -> list[Augmentation]:
    return [Augmentation(name=name, params=params) for name, params in items]


@pytest.mark.parametrize("name", ALLOWED)
def test_every_allowed_augmentation_builds_with_defaults_and_keeps_the_size(name: str) -> None:
    required = {"RandomRotation": {"degrees": 10}, "RandomAffine": {"degrees": 10}, "GaussianBlur": {"kernel_size": 3},
                "RandomPosterize": {"bits": 4}, "RandomSolarize": {"threshold": 128}, "RandomAdjustSharpness": {"sharpness_factor": 2}}
    validate_augmentations(specs((name, required.get(name, {}))), SIZE, 3, FIELD)


def test_pipeline_applies_to_uint8_images_of_the_configured_size() -> None:
    pipeline = compose_augmentations(specs(("RandomHorizontalFlip", {"p": 1.0}), ("ColorJitter", {"brightness": 0.2})), SIZE, FIELD)
    image = torch.arange(3 * 24 * 24, dtype=torch.int64).remainder(256).to(torch.uint8).view(3, 24, 24)
    out = pipeline(image)
    assert out.dtype == torch.uint8 and out.shape == image.shape
    flipped = compose_augmentations(specs(("RandomHorizontalFlip", {"p": 1.0})), SIZE, FIELD)(image)
    assert torch.equal(flipped, image.flip(-1))


def test_crops_default_to_the_configured_image_size() -> None:
    validate_augmentations(specs(("RandomResizedCrop", {"scale": [0.5, 1.0]}), ("CenterCrop", {})), SIZE, 3, FIELD)


def test_grayscale_images_are_supported() -> None:
    validate_augmentations(specs(("RandomRotation", {"degrees": 5}), ("ColorJitter", {"brightness": 0.3})), SIZE, 1, FIELD)


def test_autoaugment_policy_is_given_by_name() -> None:
    validate_augmentations(specs(("AutoAugment", {"policy": "cifar10"})), SIZE, 3, FIELD)
    with pytest.raises(ValidationError) as excinfo:
        validate_augmentations(specs(("AutoAugment", {"policy": "mnist"})), SIZE, 3, FIELD)
    assert excinfo.value.details["field"] == f"{FIELD}[0].params.policy"


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([("Resize", {"size": 10})], f"{FIELD}[0].name"),  # changes the size: not allowed
        ([("Lambda", {"lambd": "os.system"})], f"{FIELD}[0].name"),  # would run code
        ([("torchvision.transforms.v2.RandomHorizontalFlip", {})], f"{FIELD}[0].name"),  # no import strings
        ([("RandomHorizontalFlip", {}), ("RandomRotation", {})], f"{FIELD}[1].params"),  # missing degrees
        ([("RandomHorizontalFlip", {"q": 0.5})], f"{FIELD}[0].params"),  # unknown keyword
        ([("RandomRotation", {"degrees": -5, "interpolation": "cubic-ish"})], f"{FIELD}[0].params"),
        ([("GaussianBlur", {"kernel_size": 4})], f"{FIELD}[0].params"),  # must be odd
        ([("RandomResizedCrop", {"size": [10, 10]})], f"{FIELD}[0].params"),  # changes the size
        ([("RandomCrop", {"size": [48, 48]})], f"{FIELD}[0].params"),  # bigger than the image
        ([("RandAugment", {"num_ops": 100000})], f"{FIELD}[0].params.num_ops"),  # would take forever
        ([("GaussianBlur", {"kernel_size": 99999})], f"{FIELD}[0].params.kernel_size"),
        ([("ColorJitter", {"brightness": float("nan")})], f"{FIELD}[0].params.brightness"),
        ([("ColorJitter", {"brightness": {"nested": 1}})], f"{FIELD}[0].params.brightness"),
        ([("ColorJitter", {"__class__": 1})], f"{FIELD}[0].params"),
    ],
)
def test_bad_augmentations_are_refused_naming_the_entry(items, field) -> None:
    with pytest.raises(ValidationError) as excinfo:
        validate_augmentations(specs(*items), SIZE, 3, FIELD)
    assert excinfo.value.details["field"] == field
    assert "Traceback" not in excinfo.value.message


def test_unknown_name_error_lists_the_allowed_names() -> None:
    with pytest.raises(ValidationError) as excinfo:
        validate_augmentations(specs(("Mosaic", {})), SIZE, 3, FIELD)
    assert excinfo.value.details["available"] == list(ALLOWED)
