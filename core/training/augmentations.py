"""Augmentations: an allow-list of ``torchvision.transforms.v2`` classes, built from names and parameters.

A config names a class and gives keyword arguments; the class is looked up in
``ALLOWED`` (never imported from a string) and validated by constructing it
and applying it once to a dummy image of the configured size, so a bad
parameter is a 422 naming ``config.data.augmentations.train[0].params`` when
the experiment is saved, not a crash in the middle of a run. The transforms
run on ``uint8`` CHW tensors, before normalisation, and must keep the size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UnknownAugmentationError, ValidationError

if TYPE_CHECKING:
    import torch

    from .config import Augmentation

#: The transforms a config may name. All keep their input size (crops default to ``image_size``).
ALLOWED: tuple[str, ...] = (
    "AugMix",
    "AutoAugment",
    "CenterCrop",
    "ColorJitter",
    "ElasticTransform",
    "GaussianBlur",
    "RandAugment",
    "RandomAdjustSharpness",
    "RandomAffine",
    "RandomAutocontrast",
    "RandomChannelPermutation",
    "RandomCrop",
    "RandomEqualize",
    "RandomErasing",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomInvert",
    "RandomPerspective",
    "RandomPhotometricDistort",
    "RandomPosterize",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomSolarize",
    "RandomVerticalFlip",
    "TrivialAugmentWide",
)

#: Transforms whose ``size`` defaults to the configured image size.
_SIZED = frozenset({"CenterCrop", "RandomCrop", "RandomResizedCrop"})
#: Upper bounds on parameters that would otherwise make one image cost seconds (or gigabytes).
_LIMITS: dict[tuple[str, str], float] = {
    ("RandAugment", "num_ops"): 16,
    ("RandAugment", "num_magnitude_bins"): 256,
    ("TrivialAugmentWide", "num_magnitude_bins"): 256,
    ("AugMix", "mixture_width"): 8,
    ("AugMix", "chain_depth"): 8,
    ("AugMix", "severity"): 10,
    ("ElasticTransform", "sigma"): 64,
    ("ElasticTransform", "alpha"): 1000,
    ("GaussianBlur", "kernel_size"): 101,
    ("GaussianBlur", "sigma"): 100,
}
_MAX_ABS_NUMBER = 1e6
#: Apply-once validation is skipped above this many pixels (construction is still checked).
_MAX_DUMMY_PIXELS = 1024 * 1024


def _check_values(value: Any, field: str) -> None:
    """Parameters are plain JSON scalars or lists of them, with finite, bounded numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > _MAX_ABS_NUMBER:
            raise ValidationError(f"{field} must be a finite number of magnitude <= {_MAX_ABS_NUMBER:g}", field=field)
        return
    if isinstance(value, list | tuple):
        if len(value) > 16:
            raise ValidationError(f"{field} must have at most 16 elements", field=field)
        for index, item in enumerate(value):
            _check_values(item, f"{field}[{index}]")
        return
    raise ValidationError(f"{field} must be a number, string, boolean, null or a list of those", field=field)


def _max_number(value: Any) -> float:
    if isinstance(value, list | tuple):
        return max((_max_number(v) for v in value), default=0.0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return abs(float(value))
    return 0.0


def _prepare_params(name: str, params: dict[str, Any], image_size: Sequence[int], field: str) -> dict[str, Any]:
    kwargs = dict(params)
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
            raise ValidationError(f"{field}: {key!r} is not a parameter name", field=field)
        _check_values(value, f"{field}.{key}")
        limit = _LIMITS.get((name, key))
        if limit is not None and _max_number(value) > limit:
            raise ValidationError(f"{field}.{key} must be at most {limit:g} for {name}", field=f"{field}.{key}")
    if name in _SIZED and "size" not in kwargs:
        kwargs["size"] = list(image_size)
    if name == "AutoAugment" and isinstance(kwargs.get("policy"), str):
        from torchvision.transforms import AutoAugmentPolicy

        try:
            kwargs["policy"] = AutoAugmentPolicy(kwargs["policy"].lower())
        except ValueError:
            choices = ", ".join(p.value for p in AutoAugmentPolicy)
            raise ValidationError(f"{field}.policy must be one of {choices}", field=f"{field}.policy") from None
    return kwargs


def build_transform(spec: Augmentation, image_size: Sequence[int], field: str) -> Any:
    """One transform object from an allow-listed name; bad names or parameters raise ``ValidationError``."""
    from torchvision.transforms import v2

    if spec.name not in ALLOWED:
        raise UnknownAugmentationError(spec.name, list(ALLOWED), field=f"{field}.name")
    params_field = f"{field}.params"
    kwargs = _prepare_params(spec.name, spec.params, image_size, params_field)
    try:
        return getattr(v2, spec.name)(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{params_field}: invalid parameters for {spec.name}: {exc}", field=params_field) from None


def compose_augmentations(specs: Sequence[Augmentation], image_size: Sequence[int], field: str) -> Any | None:
    """A ``v2.Compose`` of the specs (``None`` when there are none)."""
    if not specs:
        return None
    from torchvision.transforms import v2

    return v2.Compose([build_transform(spec, image_size, f"{field}[{i}]") for i, spec in enumerate(specs)])


#: Flip transforms by the image axis they reverse (``-1``: left-right, ``-2``: top-bottom).
FLIP_AXES: dict[str, int] = {"RandomHorizontalFlip": -1, "RandomVerticalFlip": -2}


def flip_plan(transform: Any) -> list[tuple[int, float]] | None:
    """The pipeline as ``(axis, p)`` steps when it holds flips only, else ``None``.

    A flip-only pipeline (the common detection setup) is applied to a whole
    batch at once (``worker/data.py``) with the same random draws torchvision
    would make, one ``torch.rand(1)`` per step: building and dispatching
    torchvision's transforms per image cost ~3 % of a small detector's CPU step.
    """
    steps = getattr(transform, "transforms", None)
    if not steps:
        return None
    plan = []
    for step in steps:
        axis = FLIP_AXES.get(type(step).__name__)
        if axis is None or type(step).__module__.split(".")[0] != "torchvision":
            return None
        plan.append((axis, float(step.p)))
    return plan


def validate_augmentations(specs: Sequence[Augmentation], image_size: Sequence[int], channels: int, field: str) -> None:
    """Construct every transform and run each once on a dummy ``uint8`` image of the configured size."""
    if len(specs) > 32:
        raise ValidationError("at most 32 augmentations per list", field=field)
    transforms = [build_transform(spec, image_size, f"{field}[{i}]") for i, spec in enumerate(specs)]
    height, width = image_size
    if not transforms or height * width > _MAX_DUMMY_PIXELS:
        return
    import torch

    image: torch.Tensor = torch.full((channels, height, width), 128, dtype=torch.uint8)
    for index, (spec, transform) in enumerate(zip(specs, transforms, strict=True)):
        item = f"{field}[{index}]"
        try:
            out = transform(image)
        except (TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise ValidationError(f"{item}: {spec.name} cannot be applied to a {channels}x{height}x{width} image: {exc}",
                                  field=f"{item}.params") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(image.shape):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValidationError(
                f"{item}: {spec.name} changes the image from {tuple(image.shape)} to {shape}; "
                "augmentations must keep data.image_size",
                field=f"{item}.params",
            )
        image = out
