"""Dataset import, second half: merge staged images into the dataset, all or nothing.

Runs under the project lock. The new ``dataset.json`` is built in memory,
the staged files are moved into ``images/`` (renames within one file system),
and the JSON is written once, atomically. If anything fails before that write
completes, the moves are undone, so the previous dataset is untouched and no
stray file is left; on success, what a replace import threw away is removed.

This is the whole-document path. A non-replace import that changes no image
already there is appended streamed instead (``append.py``), with the same
result, through the pieces shared here: ``accept`` (duplicates and unique
names), ``new_image``, ``import_summary`` and ``StagedMoves``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jsonio import atomic_write_json
from .document import NONE, SOURCE_SPLIT, bbox_annotation, class_name, image_stats, label_annotation, relabel
from .naming import Taken, unique_name
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
    accepted, duplicates = accept(staged, existing, taken)
    _add_images(doc, accepted, annotates_boxes)
    doc["source"] = source
    doc["image_stats"] = image_stats(doc["images"])
    if accepted:
        _write(doc, accepted, staged.folder, replace, paths)
    return import_summary(staged, accepted, duplicates, doc["classes"], len(doc["images"]))


def accept(staged: Staged, existing: Mapping[str, str], taken: Taken) -> tuple[list[tuple[StagedImage, str]], list[dict[str, str]]]:
    """The staged images new to the dataset, each with its unique name, and every duplicate (the import's own first).

    ``existing``: the dataset's file name for a SHA-256 it holds; ``taken``: its casefolded names (names given are added).
    """
    duplicates = list(staged.duplicates)
    accepted: list[tuple[StagedImage, str]] = []
    for item in staged.images:
        first = existing.get(item.record["sha256"])
        if first is not None:
            duplicates.append({"path": item.record["source_path"], "duplicate_of": first})
            continue
        accepted.append((item, unique_name(item.wanted_name, taken)))
    return accepted, duplicates


def import_summary(staged: Staged, accepted: list[tuple[StagedImage, str]], duplicates: list[dict[str, str]],
                   classes: list[str], num_images: int) -> dict[str, Any]:
    """What an import answers."""
    return {
        "imported": len(accepted),
        "skipped": staged.skipped,
        "warnings": [{"path": item.record["source_path"], "reason": item.warning} for item, _ in accepted if item.warning],
        "duplicates": duplicates,
        "classes": classes,
        "num_images": num_images,
    }


def adds_source_split(items: Iterable[StagedImage], split_names: list[str]) -> bool:
    """Whether the accepted ``items`` bring the first ``source`` split (then every image already there gets a value in it)."""
    return any(item.subset for item in items) and SOURCE_SPLIT not in split_names


def new_image(item: StagedImage, filename: str, classes: list[str], split_names: list[str],
              annotates_boxes: bool) -> dict[str, Any]:
    """The ``dataset.json`` entry of an accepted image (``classes`` and ``split_names``: the dataset's, after the import)."""
    split = [NONE] * len(split_names)
    if SOURCE_SPLIT in split_names:
        labelled = annotates_boxes or item.label is not None or item.boxes is not None
        split[split_names.index(SOURCE_SPLIT)] = _source_subset(item.subset, labelled)
    image = {"filename": filename, **item.record, "split": split}
    if item.subset:
        image["source_subset"] = item.subset
    image["annotations"] = _annotations(item, classes)
    return image


def _add_images(doc: dict[str, Any], accepted: list[tuple[StagedImage, str]], annotates_boxes: bool) -> None:
    relabel(doc, class_names(item for item, _ in accepted))
    split_names: list[str] = doc["split_names"]
    if adds_source_split((item for item, _ in accepted), split_names):
        split_names.append(SOURCE_SPLIT)
        for image in doc["images"]:
            labelled = annotates_boxes or class_name(image) is not None
            image.setdefault("split", []).append(_source_subset(image.get("source_subset"), labelled))
    doc["images"] += [new_image(item, filename, doc["classes"], split_names, annotates_boxes) for item, filename in accepted]


def class_names(items: Iterable[StagedImage]) -> Iterator[str]:
    """The class names the images' labels and boxes use (repeats included)."""
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


class StagedMoves:
    """The accepted images' staged files renamed into ``folder`` (``run``), and removed again if the commit fails (``undo``)."""

    def __init__(self, accepted: list[tuple[StagedImage, str]], staging: Path, folder: Path) -> None:
        self.accepted = accepted
        self.staging = staging
        self.folder = folder
        self.moved: list[Path] = []

    def run(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for item, filename in self.accepted:
            target = self.folder / filename
            os.rename(self.staging / item.staged_name, target)
            self.moved.append(target)

    def undo(self) -> None:
        for path in self.moved:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self.moved.clear()


def _write(doc: dict[str, Any], accepted: list[tuple[StagedImage, str]], staging: Path, replace: bool, paths: DatasetPaths) -> None:
    moves = StagedMoves(accepted, staging, staging / "ready" if replace else paths.images)
    old_images = staging / "old-images"
    old_thumbs = staging / "old-thumbs"
    swapped = False
    try:
        moves.run()
        if replace:
            if paths.images.exists():
                os.rename(paths.images, old_images)
            os.rename(moves.folder, paths.images)
            swapped = True
        atomic_write_json(paths.json, doc)
    except BaseException:
        if swapped:
            os.rename(paths.images, moves.folder)
            if old_images.exists():
                os.rename(old_images, paths.images)
        moves.undo()
        raise
    if replace and paths.thumbs.exists():
        os.rename(paths.thumbs, old_thumbs)
    shutil.rmtree(old_images, ignore_errors=True)
    shutil.rmtree(old_thumbs, ignore_errors=True)
