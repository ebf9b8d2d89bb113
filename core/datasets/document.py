"""The ``dataset.json`` document (DESIGN section 3) as plain dicts, and helpers that keep it consistent.

``split_items`` is the exception: what training and evaluation read of a
whole dataset comes from its index's columns (``view.py``), never from a dict
per image.

Class ids are indexes into the alphabetically sorted ``classes`` list, so any
change to the set of classes goes through ``relabel`` which rewrites every
annotation's ``class_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import CorruptDataError

VERSION = 1
SUBSETS: tuple[str, ...] = ("train", "val", "test")
NONE = "none"
SPLIT_VALUES: tuple[str, ...] = (*SUBSETS, NONE)
#: Annotation types whose ``class_id`` indexes ``classes`` (``relabel`` rewrites them).
CLASS_ANNOTATIONS: frozenset[str] = frozenset({"label", "bbox"})
SOURCE_SPLIT = "source"
"""Name of the split built from train/val/test folders (or a CSV ``split`` column) of an import."""


def empty_dataset(task: str) -> dict[str, Any]:
    """The dataset of a project that has imported nothing yet."""
    return {
        "version": VERSION,
        "task": task,
        "source": None,
        "classes": [],
        "split_names": [],
        "image_stats": image_stats([]),
        "images": [],
    }


def class_name(image: dict[str, Any]) -> str | None:
    """The image's class label, or ``None`` when it has none."""
    for annotation in image.get("annotations", ()):
        if annotation.get("type") == "label":
            name = annotation.get("class_name")
            return name if isinstance(name, str) else None
    return None


def image_classes(image: dict[str, Any]) -> frozenset[str]:
    """The classes an image holds: its label's, or those of its boxes (a multi-label view of any image)."""
    return frozenset(
        annotation["class_name"]
        for annotation in image.get("annotations", ())
        if annotation.get("type") in CLASS_ANNOTATIONS and isinstance(annotation.get("class_name"), str)
    )


def label_annotation(name: str, classes: list[str]) -> dict[str, Any]:
    return {"type": "label", "class_id": classes.index(name), "class_name": name}


def bbox_annotation(name: str, bbox: list[float], classes: list[str]) -> dict[str, Any]:
    """A detection box (DESIGN section 10): ``[x, y, w, h]`` in pixels, top-left origin."""
    return {"type": "bbox", "class_id": classes.index(name), "class_name": name, "bbox": list(bbox)}


def relabel(doc: dict[str, Any], extra_classes: Iterable[str] = ()) -> None:
    """Set ``classes`` to the sorted union of used and ``extra_classes`` names, rewriting every ``class_id``."""
    names = set(doc.get("classes", ())) | set(extra_classes)
    classes = sorted(names)
    position = {name: i for i, name in enumerate(classes)}
    for image in doc["images"]:
        for annotation in image.get("annotations", ()):
            if annotation.get("type") in CLASS_ANNOTATIONS and annotation.get("class_name") in position:
                annotation["class_id"] = position[annotation["class_name"]]
    doc["classes"] = classes


def image_stats(images: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, size range and formats of ``images`` (``None`` bounds for an empty dataset)."""
    if not images:
        return {"num_images": 0, "min_width": None, "max_width": None, "min_height": None, "max_height": None, "formats": []}
    widths = [image["width"] for image in images]
    heights = [image["height"] for image in images]
    return {
        "num_images": len(images),
        "min_width": min(widths),
        "max_width": max(widths),
        "min_height": min(heights),
        "max_height": max(heights),
        "formats": sorted({image["format"] for image in images}),
    }


def split_items(dataset: Mapping[str, Any], split_index: int, subset: str) -> list[tuple[str, int]]:
    """``(filename, class_id)`` of the labelled images that ``split[split_index]`` puts in ``subset``, in file order.

    An image's label is its first ``label`` annotation, and its ``class_id``
    (not its name) is the target: a missing one, or one outside ``classes``, is
    ``CorruptDataError``. Read from the index's columns (``DatasetView``; a plain
    document is indexed first), never image by image.
    """
    import numpy as np

    from .view import as_view  # the index imports this module (and numpy stays out of plain dict work)

    view = as_view(dataset)
    positions = view.subset_positions(split_index, subset)
    labels = view.annotations(positions, "label")
    first = np.flatnonzero(np.diff(labels.owner, prepend=-1) != 0)  # each labelled image's first label
    images, class_ids, known = positions[labels.owner[first]], labels.class_id[first], labels.has_class_id[first]
    invalid = ~known | (class_ids < 0) | (class_ids >= len(view.index.classes))
    if invalid.any():
        bad = int(np.argmax(invalid))
        class_id = int(class_ids[bad]) if known[bad] else None
        name = view.filenames(images[bad : bad + 1])[0]
        raise CorruptDataError(f"dataset.json: image {name} has an invalid class_id {class_id!r}")
    return list(zip(view.filenames(images), class_ids.tolist(), strict=True))
