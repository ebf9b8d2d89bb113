"""Dataset import, first half (staging): importer records -> validated copies in a staging folder.

Nothing here touches the dataset. Every record is checked before it is
opened (regular file, one link, not a symlink, really inside the import root;
FIFOs are never opened), read once, hashed, decoded by Pillow and written to
the staging folder under a numbered name. A record with a ``problem`` is
skipped with it unread; a record's boxes are checked against the decoded
image (``boxes.py``: clipped with a warning, or the image refused with a
reason). ``commit.py`` then moves the staged files into the dataset under its lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelyardError, ValidationError
from ..plugin_types import BoxLabel, ImageRecord
from ..projects import validate_name
from .boxes import BadBox, CleanBoxes, clean_boxes, clipped_warning
from .document import SUBSETS
from .files import SourceFileError, open_checked
from .naming import flat_name
from .validate import InvalidImage, probe_image

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1000
#: A file bigger than the pixel limit allows (16-bit RGBA, plus headers) is not read into memory.
MAX_BYTES_PER_PIXEL = 8
FILE_OVERHEAD_BYTES = 1024 * 1024
#: An importer's ``problem`` is shown in ``skipped`` cut to this length.
MAX_REASON_CHARS = 500


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
    boxes: list[tuple[str, list[float]]] | None = None
    """``(class_name, [x, y, w, h])`` clipped to the image; ``None`` when the importer reads no boxes."""
    warning: str | None = None
    """What the import answer says about this image in ``warnings`` (e.g. boxes clipped)."""


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
            if record.problem is not None:
                raise _Skip(_problem_text(record.problem))
            label = _check_label(record.label)
            box_labels = _check_box_labels(record.boxes)
            data = _read_regular_file(record.path, root_real, real_parents, max_bytes)
            sha = hashlib.sha256(data).hexdigest()
            if sha in first_by_sha:
                staged.duplicates.append({"path": record.source_path, "duplicate_of": first_by_sha[sha]})
                continue
            facts = probe_image(data, max_pixels)
            boxes = _fit_boxes(box_labels, facts.width, facts.height)
        except (InvalidImage, SourceFileError) as skip:
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
                boxes=boxes.boxes if boxes is not None else None,
                warning=clipped_warning(boxes.clipped) if boxes is not None and boxes.clipped else None,
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


def _problem_text(problem: object) -> str:
    text = problem if isinstance(problem, str) and problem.strip() else "refused by the importer"
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


def _check_box_labels(boxes: Sequence[BoxLabel] | None) -> Sequence[BoxLabel] | None:
    """The boxes with valid class names; ``_Skip`` names the first bad one (the image is refused whole)."""
    if boxes is None:
        return None
    if not isinstance(boxes, (tuple, list)):
        raise _Skip("the importer's boxes are not a list (importer error)")
    checked = []
    for number, box in enumerate(boxes, start=1):
        name = getattr(box, "class_name", None)
        if not isinstance(box, BoxLabel) or not isinstance(name, str):
            raise _Skip(f"box {number} is not a BoxLabel with a class name (importer error)")
        try:
            checked.append(BoxLabel(class_name=validate_name(name, field="label"), bbox=box.bbox))
        except ValidationError as exc:
            raise _Skip(f"box {number}: invalid class name: {exc.message}") from None
    return checked


def _fit_boxes(boxes: Sequence[BoxLabel] | None, width: int, height: int) -> CleanBoxes | None:
    if boxes is None:
        return None
    try:
        return clean_boxes(boxes, width, height)
    except BadBox as exc:
        raise _Skip(str(exc)) from None


def _read_regular_file(path: Path, root_real: str, real_parents: dict[str, str], max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a plain file inside ``root_real``; ``SourceFileError`` with the reason otherwise."""
    with open_checked(path, root_real, None, real_parents) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise _Skip(f"file of {size} bytes is larger than any image within the pixel limit")
        return handle.read()
