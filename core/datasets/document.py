"""The ``dataset.json`` document (DESIGN section 3) as plain dicts, and helpers that keep it consistent.

Class ids are indexes into the alphabetically sorted ``classes`` list, so any
change to the set of classes goes through ``relabel`` which rewrites every
annotation's ``class_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def split_items(dataset: dict[str, Any], split_index: int, subset: str) -> list[tuple[str, int]]:
    """``(filename, class_id)`` of the labelled images that ``split[split_index]`` puts in ``subset``."""
    num_classes = len(dataset.get("classes") or [])
    items = []
    for image in dataset.get("images") or []:
        splits = image.get("split") or []
        if split_index >= len(splits) or splits[split_index] != subset:
            continue
        label = next((a for a in image.get("annotations") or [] if a.get("type") == "label"), None)
        if label is None:
            continue
        class_id = label.get("class_id")
        if not isinstance(class_id, int) or not 0 <= class_id < num_classes:
            raise CorruptDataError(f"dataset.json: image {image.get('filename')} has an invalid class_id {class_id!r}")
        items.append((str(image["filename"]), class_id))
    return items
