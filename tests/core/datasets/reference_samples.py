"""What training, evaluation and export read of a dataset as it was before issue 19, over the parsed ``dataset.json``.

Copied from the dict-per-image code the column readers replaced
(``document.split_items``, detection's ``image_target``/``samples``, the
runtimes' ``evaluation_samples``, the engine's reproducibility hashes and the
evaluation service's ``subset_size``): the oracles the vectorised readers of a
``DatasetView`` must equal, item for item and error for error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch

from modelyard.core.errors import CorruptDataError


def split_items(dataset: dict[str, Any], split_index: int, subset: str) -> list[tuple[str, int]]:
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


def classification_evaluation_samples(dataset: dict[str, Any], split_index: int, subset: str,
                                      model_classes: list[str]) -> tuple[list[tuple[str, int]], int]:
    dataset_classes = [str(c) for c in dataset.get("classes") or []]
    model_ids = {name: i for i, name in enumerate(model_classes)}
    samples = []
    skipped = 0
    for filename, class_id in split_items(dataset, split_index, subset):
        model_id = model_ids.get(dataset_classes[class_id])
        if model_id is None:
            skipped += 1
        else:
            samples.append((filename, model_id))
    return samples, skipped


def image_target(image: dict[str, Any], num_classes: int, image_size: Sequence[int]) -> dict[str, torch.Tensor]:
    width, height = float(image.get("width") or 0), float(image.get("height") or 0)
    if width <= 0 or height <= 0:
        raise CorruptDataError(f"dataset.json: image {image.get('filename')} has no size")
    sx, sy = float(image_size[1]) / width, float(image_size[0]) / height
    boxes, labels = [], []
    for annotation in image.get("annotations") or []:
        if annotation.get("type") != "bbox":
            continue
        class_id = annotation.get("class_id")
        box = annotation.get("bbox")
        if not isinstance(class_id, int) or not 0 <= class_id < num_classes or not isinstance(box, list) or len(box) != 4:
            raise CorruptDataError(f"dataset.json: image {image.get('filename')} has an invalid box annotation")
        x, y, w, h = (float(v) for v in box)
        boxes.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
        labels.append(class_id)
    if not boxes:
        return {"boxes": torch.zeros((0, 4), dtype=torch.float32), "labels": torch.zeros((0,), dtype=torch.int64)}
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


def detection_samples(dataset: dict[str, Any], split_index: int, subset: str,
                      image_size: Sequence[int]) -> list[tuple[str, dict[str, Any]]]:
    num_classes = len(dataset.get("classes") or [])
    samples = []
    for image in dataset.get("images") or []:
        splits = image.get("split") or []
        if split_index < len(splits) and splits[split_index] == subset:
            target: dict[str, Any] = image_target(image, num_classes, image_size)
            target["source_size"] = (float(image["width"]), float(image["height"]))
            samples.append((str(image["filename"]), target))
    return samples


def detection_evaluation_samples(dataset: dict[str, Any], split_index: int, subset: str, image_size: Sequence[int],
                                 model_classes: list[str]) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    dataset_classes = [str(c) for c in dataset.get("classes") or []]
    model_ids = {name: i for i, name in enumerate(model_classes)}
    to_model = [model_ids.get(name, -1) for name in dataset_classes]
    samples = []
    skipped = 0
    for filename, target in detection_samples(dataset, split_index, subset, image_size):
        labels = [to_model[int(c)] for c in target["labels"].tolist()]
        if any(c < 0 for c in labels):
            skipped += 1
            continue
        image = target.pop("source_size")
        samples.append((filename, {**target, "labels": torch.tensor(labels, dtype=torch.int64),
                                   "source_scale": (image[0] / float(image_size[1]), image[1] / float(image_size[0]))}))
    return samples, skipped


def dataset_fingerprint(dataset: dict[str, Any]) -> str:
    pairs = []
    for image in dataset.get("images") or []:
        label = next((a.get("class_name") for a in image.get("annotations") or [] if a.get("type") == "label"), None)
        pairs.append((str(image.get("sha256", "")), "" if label is None else str(label)))
    return hashlib.sha256(json.dumps(sorted(pairs), separators=(",", ":")).encode("utf-8")).hexdigest()


def split_hash(dataset: dict[str, Any], split_index: int) -> str:
    pairs = []
    for image in dataset.get("images") or []:
        splits = image.get("split") or []
        pairs.append((str(image.get("filename")), splits[split_index] if split_index < len(splits) else "none"))
    return hashlib.sha256(json.dumps(sorted(pairs), separators=(",", ":")).encode("utf-8")).hexdigest()


def subset_size(dataset: dict[str, Any], split_index: int, subset: str, annotation_types: tuple[str, ...]) -> int:
    count = 0
    for image in dataset.get("images") or []:
        splits = image.get("split") or []
        if split_index < len(splits) and splits[split_index] == subset and any(
                a.get("type") in annotation_types for a in image.get("annotations") or []):
            count += 1
    return count
