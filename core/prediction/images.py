"""Uploaded images: validated exactly as an import validates them, then the run's own preprocessing.

Nothing is written to disk: the bytes are probed (format allow-list, pixel
limit before decoding, a full decode that catches truncation) by
``core/datasets/validate.py`` and decoded by ``image_tensor``, the function
training and evaluation use.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from ..datasets.validate import ACCEPTED_FORMATS, InvalidImage, probe_image

if TYPE_CHECKING:
    import torch

#: The error code of an image a predict request cannot use (in its ``results`` item, not the envelope).
INVALID_IMAGE = "INVALID_IMAGE"


@dataclass(frozen=True)
class DecodedImage:
    """An upload ready for the network: its ``uint8`` CHW pixels and its size as sent (width, height)."""

    filename: str
    pixels: torch.Tensor
    width: int
    height: int


def decode_upload(filename: str, data: bytes, image_size: tuple[int, int], channels: int,
                  max_pixels: int) -> DecodedImage:
    """Validate ``data`` as an import would and preprocess it; ``InvalidImage`` (with a reason) when unusable."""
    from ..training.worker.data import image_tensor

    if not data:
        raise InvalidImage("empty file")
    facts = probe_image(data, max_pixels)
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            pixels = image_tensor(image, image_size, channels)
    except Exception as exc:  # probe_image decoded it already; this is belt and braces for odd modes
        raise InvalidImage(f"the image cannot be converted for the model ({type(exc).__name__}: {exc})") from None
    return DecodedImage(filename, pixels, facts.width, facts.height)
