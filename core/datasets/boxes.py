"""Boxes an importer found, made fit for ``dataset.json``: checked, clipped to the decoded image, rounded.

An importer states boxes as its source does (``[x, y, w, h]`` in the file's
pixels); the source may be wrong. A box reaching outside the image is clipped
to it and counted (the import answers with a warning); a box with a
non-finite coordinate, or no area left after clipping, makes the whole image
refused with a reason, because training on a half-labelled image would teach
the model that the missing object is background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..plugin_types import BoxLabel

#: Decimal places kept in ``dataset.json`` (a thousandth of a pixel).
DECIMALS = 3


class BadBox(ValueError):
    """A box that makes its image unusable; the message is the reason shown in ``skipped``."""


@dataclass(frozen=True)
class CleanBoxes:
    boxes: list[tuple[str, list[float]]]
    """``(class_name, [x, y, w, h])`` inside the image, in the importer's order."""
    clipped: int
    """How many boxes reached outside the image and were clipped."""


def clean_boxes(boxes: Sequence[BoxLabel], width: int, height: int) -> CleanBoxes:
    """``boxes`` clipped to a ``width`` x ``height`` image; ``BadBox`` for a box that cannot be kept."""
    kept: list[tuple[str, list[float]]] = []
    clipped = 0
    for number, box in enumerate(boxes, start=1):
        coords = _coordinates(box, number)
        x, y, w, h = coords
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(float(width), x + w), min(float(height), y + h)
        if not (math.isfinite(x2) and math.isfinite(y2)):
            raise BadBox(f"box {number} ({box.class_name}) has a coordinate too large to use")
        bbox = [round(x1, DECIMALS), round(y1, DECIMALS), round(x2 - x1, DECIMALS), round(y2 - y1, DECIMALS)]
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise BadBox(f"box {number} ({box.class_name}) is degenerate: {_shown(coords)} has no area inside the "
                         f"{width}x{height} image")
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            clipped += 1
        kept.append((box.class_name, bbox))
    return CleanBoxes(boxes=kept, clipped=clipped)


def clipped_warning(count: int) -> str:
    """The warning of an image whose boxes were clipped."""
    return f"{count} box{'es' if count != 1 else ''} clipped to the image"


def _coordinates(box: object, number: int) -> tuple[float, float, float, float]:
    if not isinstance(box, BoxLabel):
        raise BadBox(f"box {number} is not a BoxLabel (importer error)")
    bbox = box.bbox
    if not isinstance(bbox, (tuple, list)) or len(bbox) != 4:
        raise BadBox(f"box {number} ({box.class_name}) must have 4 numbers [x, y, w, h]")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise BadBox(f"box {number} ({box.class_name}) has a coordinate that is not a number")
    try:
        values = tuple(float(v) for v in bbox)
    except OverflowError:
        raise BadBox(f"box {number} ({box.class_name}) has a coordinate too large to use") from None
    if not all(math.isfinite(v) for v in values):
        raise BadBox(f"box {number} ({box.class_name}) has a non-finite coordinate {_shown(values)}")
    return values  # type: ignore[return-value]


def _shown(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"
