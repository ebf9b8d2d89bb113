"""Is this file really an image we accept? Open it with Pillow, restricted to known formats, and decode it.

Decoding (not just reading the header) is what catches truncated files; for
JPEG a reduced-scale draft still walks the whole compressed stream, so the
check stays cheap for large photos. The pixel limit is ours (configurable),
checked from the header before anything is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

#: Pillow format names we accept, in the order Pillow tries them.
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
#: Our lower-case format name -> file extensions (the first is the canonical one).
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "png": (".png",),
    "bmp": (".bmp",),
    "gif": (".gif",),
    "webp": (".webp",),
    "tiff": (".tif", ".tiff"),
}
MEDIA_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "bmp": "image/bmp",
    "gif": "image/gif",
    "webp": "image/webp",
    "tiff": "image/tiff",
}
_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_JPEG_DRAFT_SCALE = 8


class InvalidImage(Exception):
    """The file is not an image we accept; ``reason`` is shown to the user in ``skipped``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageFacts:
    format: str
    """Lower-case format name, a key of ``EXTENSIONS``."""
    width: int
    """Width as displayed, i.e. after the EXIF orientation is applied."""
    height: int
    mode: str


def probe_image(data: bytes, max_pixels: int) -> ImageFacts:
    """Decode ``data`` fully enough to trust it; raise ``InvalidImage`` with a reason otherwise."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImage(_too_many_pixels(width, height, max_pixels))
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, width // _JPEG_DRAFT_SCALE), max(1, height // _JPEG_DRAFT_SCALE)))
            image.load()
            orientation = image.getexif().get(_ORIENTATION_TAG, 1)
            fmt = str(image.format).lower()
            mode = image.mode
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        raise InvalidImage("not a recognised image (accepted: JPEG, PNG, BMP, GIF, WebP, TIFF)") from None
    except Image.DecompressionBombError:
        raise InvalidImage(f"image has more pixels than the limit of {max_pixels} (possible decompression bomb)") from None
    except Exception as exc:  # Pillow raises many types for corrupt data; each becomes a reported skip
        raise InvalidImage(f"corrupt or truncated image ({type(exc).__name__}: {exc})") from None
    if fmt not in EXTENSIONS:
        raise InvalidImage(f"unsupported image format {fmt}")
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return ImageFacts(format=fmt, width=width, height=height, mode=mode)


def _too_many_pixels(width: int, height: int, limit: int) -> str:
    return f"image is {width}x{height} pixels, more than the limit of {limit} (possible decompression bomb)"
