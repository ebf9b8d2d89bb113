"""Dataset import, first half (staging): importer records -> validated copies in a staging folder.

Nothing here touches the dataset. Every record is checked before it is
opened (regular file, one link, not a symlink, really inside the import root;
FIFOs are never opened), read once, hashed, decoded by Pillow and written to
the staging folder under a numbered name. ``commit.py`` then moves the staged
files into the dataset under its lock.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelyardError, ValidationError
from ..plugin_types import ImageRecord
from ..projects import validate_name
from .document import SUBSETS
from .naming import flat_name
from .sources import is_inside
from .validate import InvalidImage, probe_image

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1000
#: A file bigger than the pixel limit allows (16-bit RGBA, plus headers) is not read into memory.
MAX_BYTES_PER_PIXEL = 8
FILE_OVERHEAD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class StagedImage:
    staged_name: str
    """File name inside the staging folder."""
    wanted_name: str
    """Flat name derived from ``source_path`` (made unique against the dataset at commit)."""
    record: dict[str, Any]
    """The ``dataset.json`` image entry without ``filename``, ``split`` and ``annotations``."""
    label: str | None
    subset: str | None


@dataclass
class Staged:
    """What staging found: images ready to commit, files skipped and duplicates within the import."""

    folder: Path
    images: list[StagedImage] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)


class _Skip(InvalidImage):
    """A file that is not even read (a link, a FIFO, outside the root, too big...)."""


def stage_records(records: Iterable[ImageRecord], root: Path, folder: Path, max_pixels: int, importer_id: str) -> Staged:
    """Validate and copy every record under ``root`` into ``folder``; see the module docstring."""
    root_real = os.path.realpath(root)
    max_bytes = max_pixels * MAX_BYTES_PER_PIXEL + FILE_OVERHEAD_BYTES
    folder.mkdir(parents=True, exist_ok=True)
    staged = Staged(folder=folder)
    first_by_sha: dict[str, str] = {}
    real_parents: dict[str, str] = {}
    count = 0
    for record in _guarded(records, importer_id):
        count += 1
        if count % PROGRESS_EVERY == 0:
            log.info("import: %d files read, %d valid, %d skipped", count, len(staged.images), len(staged.skipped))
        try:
            label = _check_label(record.label)
            data = _read_regular_file(record.path, root_real, real_parents, max_bytes)
            sha = hashlib.sha256(data).hexdigest()
            if sha in first_by_sha:
                staged.duplicates.append({"path": record.source_path, "duplicate_of": first_by_sha[sha]})
                continue
            facts = probe_image(data, max_pixels)
        except InvalidImage as skip:
            staged.skipped.append({"path": record.source_path, "reason": skip.reason})
            continue
        first_by_sha[sha] = record.source_path
        staged_name = f"{len(staged.images):08d}"
        with open(folder / staged_name, "xb") as handle:
            handle.write(data)
        staged.images.append(
            StagedImage(
                staged_name=staged_name,
                wanted_name=flat_name(record.source_path, facts.format),
                record={
                    "width": facts.width,
                    "height": facts.height,
                    "size": len(data),
                    "format": facts.format,
                    "sha256": sha,
                    "source_path": record.source_path,
                },
                label=label,
                subset=record.subset if record.subset in SUBSETS else None,
            )
        )
    log.info("import: %d files read, %d valid, %d skipped, %d duplicates", count, len(staged.images), len(staged.skipped), len(staged.duplicates))
    return staged


def _guarded(records: Iterable[ImageRecord], importer_id: str) -> Iterable[ImageRecord]:
    """Records of the importer; a crash inside a plugin becomes a clear validation error."""
    iterator = iter(records)
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except ModelyardError:
            raise
        except Exception as exc:
            log.exception("importer %s failed while reading", importer_id)
            raise ValidationError(
                f"The '{importer_id}' importer could not read the folder: {type(exc).__name__}: {exc}",
                field="format",
                details={"format": importer_id},
            ) from exc
        yield record


def _check_label(label: str | None) -> str | None:
    if label is None:
        return None
    try:
        return validate_name(label, field="label")
    except ValidationError as exc:
        raise _Skip(f"invalid class name: {exc.message}") from None


def _read_regular_file(path: Path, root_real: str, real_parents: dict[str, str], max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a plain file inside ``root_real``; ``_Skip`` with the reason otherwise."""
    if path.name in ("", ".", ".."):
        raise _Skip("not a file")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise _Skip("file not found") from None
    except OSError as exc:
        raise _Skip(f"cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise _Skip("symbolic link (links are not followed)")
    parent = str(path.parent)
    real_parent = real_parents.get(parent)
    if real_parent is None:
        real_parent = real_parents[parent] = os.path.realpath(parent)
    if not is_inside(os.path.join(real_parent, path.name), root_real):
        raise _Skip("outside the import folder")
    if not stat.S_ISREG(info.st_mode):
        raise _Skip(f"not a regular file ({_kind(info.st_mode)})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Skip("symbolic link (links are not followed)") from None
        raise _Skip(f"cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())  # the file we opened, not the name we checked
        if not stat.S_ISREG(info.st_mode):
            raise _Skip(f"not a regular file ({_kind(info.st_mode)})")
        if info.st_nlink > 1:
            raise _Skip("hard link (a file with several names is skipped)")
        if info.st_size > max_bytes:
            raise _Skip(f"file of {info.st_size} bytes is larger than any image within the pixel limit")
        return handle.read()


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"
