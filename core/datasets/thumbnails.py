"""Thumbnails (longest side 256), made on first request and cached in ``dataset/.thumbs/``.

Cache files are named by the image's sha256, so a name reused by a later
import can never be served an older image's thumbnail.

JPEG for opaque images, WebP when the image has transparency. The cache file
is written to a temp file and renamed into place, so two first requests at
the same time each produce a whole file and a reader never sees a torn one.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

from ..jsonio import atomic_write_bytes
from .validate import ACCEPTED_FORMATS

THUMB_SIZE = 256
FORMATS: dict[str, tuple[str, str]] = {".jpg": ("JPEG", "image/jpeg"), ".webp": ("WEBP", "image/webp")}


def cached_thumbnail(thumbs_dir: Path, key: str) -> tuple[Path, str] | None:
    """The cached thumbnail for ``key`` (a sha256 hex digest) and its media type, if there is one."""
    for suffix, (_fmt, media_type) in FORMATS.items():
        path = thumbs_dir / (key + suffix)
        if path.is_file():
            return path, media_type
    return None


def make_thumbnail(source: Path, thumbs_dir: Path, key: str) -> tuple[Path, str]:
    """Render and cache the thumbnail of ``source``; returns its path and media type."""
    with Image.open(source, formats=ACCEPTED_FORMATS) as image:
        image.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
        image.load()
        oriented = ImageOps.exif_transpose(image)
        has_alpha = oriented.mode in ("RGBA", "LA", "PA") or (oriented.mode == "P" and "transparency" in oriented.info)
        converted = oriented.convert("RGBA" if has_alpha else "RGB")
    converted.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS)
    suffix = ".webp" if has_alpha else ".jpg"
    fmt, media_type = FORMATS[suffix]
    buffer = io.BytesIO()
    converted.save(buffer, format=fmt, quality=85)
    path = thumbs_dir / (key + suffix)
    atomic_write_bytes(path, buffer.getvalue())
    return path, media_type
