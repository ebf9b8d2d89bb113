"""``dataset.json`` documents for tests: short ones completed with the stored fields they leave out, and generated ones.

A ``DatasetView`` is built from a document's JSON, which must hold every
stored image field (``width``, ``sha256``...); ``complete`` fills in the ones a
test does not care about. The generators make seeded documents with the
awkward cases the column readers must handle: unlabelled images, several
labels, labels without a name, short split lists, odd split values, a
``source_subset``, unicode names, background images and boxes of every count.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from modelyard.core.datasets.document import image_stats
from modelyard.core.datasets.view import DatasetView

SPLIT_VALUES = ("train", "val", "test", "none", "holdout")
NAME_STEMS = ("img", "IMG", "café", "ünï", "shot-")


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with every stored key a test left out filled in (sizes 16x16, a hash of the name, no split)."""
    images = []
    for position, image in enumerate(doc.get("images", [])):
        name = image.get("filename", f"img{position}.png")
        images.append({"width": 16, "height": 16, "size": 100, "format": "png",
                       "sha256": hashlib.sha256(name.encode("utf-8")).hexdigest(), "source_path": f"src/{name}",
                       "split": [], "annotations": [], **image})
    base = {"version": 1, "task": "classification", "source": None, "classes": [], "split_names": []}
    return {**base, **doc, "image_stats": image_stats(images), "images": images}


def view_of(doc: dict[str, Any]) -> DatasetView:
    """The view of a (short) document, completed first."""
    return DatasetView.from_document(complete(doc))


def _name(rng: random.Random, position: int) -> str:
    return f"{rng.choice(NAME_STEMS)}_{position:05d}.{rng.choice(['png', 'jpg'])}"


def _split(rng: random.Random, splits: int) -> list[str]:
    length = splits if rng.random() < 0.85 else rng.randrange(0, splits + 1)  # some lists are short
    return [rng.choice(SPLIT_VALUES) for _ in range(length)]


def _image(rng: random.Random, position: int, splits: int, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    name = _name(rng, position)
    image = {"filename": name, "width": rng.randrange(8, 900), "height": rng.randrange(8, 700),
             "size": rng.randrange(100, 10_000), "format": name.rsplit(".", 1)[1],
             "sha256": hashlib.sha256(f"{position}".encode()).hexdigest(), "source_path": f"source/{name}",
             "split": _split(rng, splits), "annotations": annotations}
    if rng.random() < 0.2:
        image["source_subset"] = rng.choice(["train", "val", "test"])
    return image


def _document(task: str, classes: list[str], splits: int, images: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": 1, "task": task, "source": {"kind": "generated", "format": "test"}, "classes": classes,
            "split_names": [f"split{k}" for k in range(splits)], "image_stats": image_stats(images), "images": images}


def label(class_id: int | None, classes: list[str], name: bool = True) -> dict[str, Any]:
    annotation: dict[str, Any] = {"type": "label"}
    if class_id is not None:
        annotation["class_id"] = class_id
    if name and class_id is not None and 0 <= class_id < len(classes):
        annotation["class_name"] = classes[class_id]
    return annotation


def box(rng: random.Random, class_id: int | None, classes: list[str], width: int, height: int) -> dict[str, Any]:
    x, y = rng.uniform(0, width - 2), rng.uniform(0, height - 2)
    annotation: dict[str, Any] = {"type": "bbox", "bbox": [round(x, rng.choice([0, 2, 6])), round(y, 3),
                                                            rng.uniform(1, width - x), rng.uniform(1, height - y)]}
    if class_id is not None:
        annotation["class_id"] = class_id
        if 0 <= class_id < len(classes):
            annotation["class_name"] = classes[class_id]
    return annotation


def classification_document(seed: int, count: int = 300, splits: int = 3) -> dict[str, Any]:
    """Labelled, unlabelled, doubly labelled and box-annotated images; every ``class_id`` valid."""
    rng = random.Random(seed)
    classes = ["bird", "cat", "dög"][: rng.choice([2, 3])]
    images = []
    for position in range(count):
        draw = rng.random()
        if draw < 0.2:
            annotations: list[dict[str, Any]] = []
        elif draw < 0.8:
            annotations = [label(rng.randrange(len(classes)), classes)]
        elif draw < 0.88:  # two labels: the first one counts
            annotations = [label(rng.randrange(len(classes)), classes), label(rng.randrange(len(classes)), classes)]
        elif draw < 0.94:  # another annotation before the label
            annotations = [box(rng, 0, classes, 50, 50), label(rng.randrange(len(classes)), classes)]
        else:  # a label without its class name: the class_id is still the target
            annotations = [label(rng.randrange(len(classes)), classes, name=False)]
        images.append(_image(rng, position, splits, annotations))
    return _document("classification", classes, splits, images)


def detection_document(seed: int, count: int = 200, splits: int = 2) -> dict[str, Any]:
    """Background images and images with 1..5 boxes (some with a label too); every box valid."""
    rng = random.Random(seed)
    classes = ["circle", "square", "star"]
    images = []
    for position in range(count):
        image = _image(rng, position, splits, [])
        boxes = rng.choice([0, 0, 1, 1, 2, 3, 5])
        image["annotations"] = [box(rng, rng.randrange(len(classes)), classes, image["width"], image["height"])
                                for _ in range(boxes)]
        if rng.random() < 0.1:
            image["annotations"].insert(0, label(rng.randrange(len(classes)), classes))  # not a box: ignored
        images.append(image)
    return _document("object_detection", classes, splits, images)
