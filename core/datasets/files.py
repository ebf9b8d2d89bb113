"""Opening a file of an import folder without trusting it: images, and the label files importers read.

A path is opened only if it is a plain file really inside the import root
(its parent resolved, the file itself never followed as a symlink), with one
name (no hard link), and never blocking (a FIFO is refused, not waited on).
Staging reads every image through here; importers read their label files and
image headers through ``read_source_file`` and ``source_image_size`` (public in
``modelyard.core``), so a label file can no more escape the root than an image.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .sources import is_inside

_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})


class SourceFileError(Exception):
    """A file of the import folder that is not read (a link, a FIFO, outside the root, too big...); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def open_checked(path: Path, root_real: str, max_bytes: int | None, real_parents: dict[str, str] | None = None) -> Iterator[BinaryIO]:
    """``path`` opened for reading if it is a plain file inside ``root_real`` (already resolved); see the module docstring.

    ``real_parents`` caches resolved parent folders across calls (an import resolves each folder once);
    ``max_bytes=None`` leaves the size to the caller.
    """
    if path.name in ("", ".", ".."):
        raise SourceFileError("not a file")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise SourceFileError("file not found") from None
    except OSError as exc:
        raise SourceFileError(f"cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise SourceFileError("symbolic link (links are not followed)")
    parent = str(path.parent)
    cache = real_parents if real_parents is not None else {}
    real_parent = cache.get(parent)
    if real_parent is None:
        real_parent = cache[parent] = os.path.realpath(parent)
    if not is_inside(os.path.join(real_parent, path.name), root_real):
        raise SourceFileError("outside the import folder")
    if not stat.S_ISREG(info.st_mode):
        raise SourceFileError(f"not a regular file ({file_kind(info.st_mode)})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceFileError("symbolic link (links are not followed)") from None
        raise SourceFileError(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # the file we opened, not the name we checked
        if not stat.S_ISREG(info.st_mode):
            raise SourceFileError(f"not a regular file ({file_kind(info.st_mode)})")
        if info.st_nlink > 1:
            raise SourceFileError("hard link (a file with several names is skipped)")
        if max_bytes is not None and info.st_size > max_bytes:
            raise SourceFileError(f"file of {info.st_size} bytes is larger than the limit of {max_bytes} bytes")
        yield handle


def read_source_file(path: Path, root: Path, max_bytes: int) -> bytes:
    """The bytes of a label or annotation file inside the import folder ``root``; ``SourceFileError`` with the reason otherwise."""
    with open_checked(Path(path), os.path.realpath(root), max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SourceFileError(f"file is larger than the limit of {max_bytes} bytes")
    return data


def source_image_size(path: Path, root: Path) -> tuple[int, int]:
    """``(width, height)`` of an image of the import folder as displayed (EXIF rotation applied), from its header only.

    For importers whose labels are relative to the image size (YOLO). The
    image is not decoded here; staging decodes it and reports a bad one.
    """
    from PIL import Image

    from .validate import ACCEPTED_FORMATS

    with open_checked(Path(path), os.path.realpath(root), max_bytes=None) as handle:
        try:
            with Image.open(handle, formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
                orientation = image.getexif().get(_ORIENTATION_TAG, 1)
        except Exception as exc:  # Pillow raises many types for a bad header
            raise SourceFileError(f"not a recognised image ({type(exc).__name__})") from None
    return (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"
