"""Dataset import, second half: merge staged images into the dataset, all or nothing.

Runs under the project lock. The new ``dataset.json`` is built in memory,
the staged files are moved into ``images/`` (renames within one file system),
and the JSON is written once, atomically. If anything fails before that write
completes, the moves are undone, so the previous dataset is untouched and no
stray file is left; on success, what a replace import threw away is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jsonio import atomic_write_json
from .document import NONE, SOURCE_SPLIT, bbox_annotation, class_name, image_stats, label_annotation, relabel
from .naming import unique_name
from .staging import Staged, StagedImage


@dataclass(frozen=True)
class DatasetPaths:
    json: Path
    images: Path
    thumbs: Path


def merge_import(
    doc: dict[str, Any], staged: Staged, replace: bool, source: dict[str, Any], paths: DatasetPaths,
    annotates_boxes: bool = False,
) -> dict[str, Any]:
    """Apply ``staged`` to ``doc`` (the current dataset, or an empty one when replacing) on disk; return the summary.

    ``annotates_boxes``: the project's task reads boxes, so every image is annotated (no box = a background image).
    """
    existing = {image["sha256"]: image["filename"] for image in doc["images"]}
    taken = {image["filename"].casefold() for image in doc["images"]}
    duplicates = list(staged.duplicates)
    accepted: list[tuple[StagedImage, str]] = []
    for item in staged.images:
        first = existing.get(item.record["sha256"])
        if first is not None:
            duplicates.append({"path": item.record["source_path"], "duplicate_of": first})
            continue
        accepted.append((item, unique_name(item.wanted_name, taken)))
    _add_images(doc, accepted, annotates_boxes)
    doc["source"] = source
    doc["image_stats"] = image_stats(doc["images"])
    if accepted:
        _write(doc, accepted, staged.folder, replace, paths)
    return {
        "imported": len(accepted),
        "skipped": staged.skipped,
        "warnings": [{"path": item.record["source_path"], "reason": item.warning} for item, _ in accepted if item.warning],
        "duplicates": duplicates,
        "classes": doc["classes"],
        "num_images": len(doc["images"]),
    }


def _add_images(doc: dict[str, Any], accepted: list[tuple[StagedImage, str]], annotates_boxes: bool) -> None:
    relabel(doc, _class_names(item for item, _ in accepted))
    classes = doc["classes"]
    split_names: list[str] = doc["split_names"]
    if any(item.subset for item, _ in accepted) and SOURCE_SPLIT not in split_names:
        split_names.append(SOURCE_SPLIT)
        for image in doc["images"]:
            labelled = annotates_boxes or class_name(image) is not None
            image.setdefault("split", []).append(_source_subset(image.get("source_subset"), labelled))
    source_index = split_names.index(SOURCE_SPLIT) if SOURCE_SPLIT in split_names else None
    for item, filename in accepted:
        split = [NONE] * len(split_names)
        if source_index is not None:
            labelled = annotates_boxes or item.label is not None or item.boxes is not None
            split[source_index] = _source_subset(item.subset, labelled)
        image = {"filename": filename, **item.record, "split": split}
        if item.subset:
            image["source_subset"] = item.subset
        image["annotations"] = _annotations(item, classes)
        doc["images"].append(image)


def _class_names(items: Iterable[StagedImage]) -> Iterator[str]:
    for item in items:
        if item.label is not None:
            yield item.label
        for name, _bbox in item.boxes or ():
            yield name


def _annotations(item: StagedImage, classes: list[str]) -> list[dict[str, Any]]:
    annotations = [label_annotation(item.label, classes)] if item.label is not None else []
    annotations += [bbox_annotation(name, bbox, classes) for name, bbox in item.boxes or ()]
    return annotations


def _source_subset(subset: str | None, labelled: bool) -> str:
    return subset if subset and labelled else NONE


def _write(doc: dict[str, Any], accepted: list[tuple[StagedImage, str]], staging: Path, replace: bool, paths: DatasetPaths) -> None:
    ready = staging / "ready" if replace else paths.images
    ready.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    old_images = staging / "old-images"
    old_thumbs = staging / "old-thumbs"
    swapped = False
    try:
        for item, filename in accepted:
            target = ready / filename
            os.rename(staging / item.staged_name, target)
            moved.append(target)
        if replace:
            if paths.images.exists():
                os.rename(paths.images, old_images)
            os.rename(ready, paths.images)
            swapped = True
        atomic_write_json(paths.json, doc)
    except BaseException:
        if swapped:
            os.rename(paths.images, ready)
            if old_images.exists():
                os.rename(old_images, paths.images)
        for path in moved:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise
    if replace and paths.thumbs.exists():
        os.rename(paths.thumbs, old_thumbs)
    shutil.rmtree(old_images, ignore_errors=True)
    shutil.rmtree(old_thumbs, ignore_errors=True)
