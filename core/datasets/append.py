"""Dataset import, second half, streamed: new images appended to ``dataset.json`` without the document as Python objects.

A non-replace import that changes no image already in the dataset is committed
here; ``append_import`` returns ``None`` (having changed nothing) otherwise, and
the caller takes ``commit.merge_import``, the whole-document path, which writes
the same result. It appends when:

* the index describes every image of the file (``DatasetIndex.whole_file``);
* no image's ``class_id`` changes: every label and box naming a class already
  has the id it has in the classes after the import (a new class sorts after
  every class in use), so ``relabel`` would rewrite nothing;
* the import does not bring the first ``source`` split to a dataset with
  images (each of them would get a value in it);
* the file is laid out as our writer lays it out (``layout.py``), its header
  holds every key an import sets, and its images array holds as many images as
  the index.

Duplicates are found in the index's hash column (``owners_of``) and names made
unique against its casefolded names (``casefolded_names``), through the same
``commit.accept`` as the whole-document path. The new file is the header
re-encoded (classes, split names, source, and ``image_stats`` from the index's
columns and the new images), every existing image's bytes as they are, then
the new images as ``atomic_write_json`` lays them out (msgspec, indent 2, at
the images' depth): for a file our writer wrote, byte for byte what the
whole-document path writes.

On disk, as in the whole-document path, the staged files are renamed into
``images/`` before the new ``dataset.json`` replaces the old one, and the
moves are undone if anything fails. Here the temp file is written and fsynced
first, so a ``NotStreamable`` comes before any move, and a process killed
before the rename leaves the previous ``dataset.json`` (with, if it died after
the moves, files in ``images/`` that it does not list: so does the
whole-document path, killed while writing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..jsonio import encode_pretty
from .commit import (DatasetPaths, StagedMoves, accept, adds_source_split, class_names, import_summary,
                     new_image)
from .document import SOURCE_SPLIT, image_stats
from .index import DatasetIndex
from .layout import ARRAY_END, BOUNDARY, NotStreamable, image_pieces, read_header, replaced
from .staging import Staged

log = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024
#: the header keys an import sets: one missing, the whole-document path would add it after ``images``
SET_KEYS = ("source", "classes", "split_names", "image_stats")


def append_import(index: DatasetIndex, staged: Staged, source: dict[str, Any], paths: DatasetPaths,
                  annotates_boxes: bool = False) -> tuple[dict[str, Any], DatasetIndex | None] | None:
    """``merge_import`` of a non-replace import into the dataset ``index`` describes, appended; ``None`` when it cannot be.

    Returns the import's summary and the index of the new file (``None`` when nothing was written: ``index`` still is).
    """
    if not index.whole_file():
        return None
    owners = index.owners_of([item.record["sha256"] for item in staged.images])
    fresh = [item for item in staged.images if item.record["sha256"] not in owners]
    classes = sorted(set(index.classes).union(class_names(fresh)))
    if not fresh:  # only duplicates: nothing is written
        return import_summary(staged, [], accept(staged, owners, set())[1], classes, len(index)), None
    split_names = list(index.split_names)
    if adds_source_split(fresh, split_names):
        if len(index):
            return None
        split_names.append(SOURCE_SPLIT)
    if not index.class_ids_agree(classes):
        return None
    accepted, duplicates = accept(staged, owners, _FoldedNames(index))
    images = [new_image(item, filename, classes, split_names, annotates_boxes) for item, filename in accepted]
    text = encode_pretty(images).replace(b"\n", b"\n  ")[1:-4]  # the items alone, at the images' depth
    values = {"source": source, "classes": classes, "split_names": split_names,
              "image_stats": _joined_stats(index.file_stats(), images)}
    # joined before the write, so the caller adopts it right after the rename: a reader in between would rebuild it
    try:
        joined = index.appended(b"[" + text + b"]", {"task": index.task, **values})
    except Exception:  # a bug, not a user error: the whole-document path still imports
        log.exception("the index could not be joined with the new images; dataset.json is rewritten whole")
        return None
    moves = StagedMoves(accepted, staged.folder, paths.images)
    try:
        append_images(paths.json, index, values, text, moves.run)
    except NotStreamable as exc:
        moves.undo()
        log.info("dataset.json rewritten whole for the import: %s", exc)
        return None
    except BaseException:
        moves.undo()
        raise
    return import_summary(staged, accepted, duplicates, classes, len(index) + len(images)), joined


def append_images(path: Path, index: DatasetIndex, values: dict[str, Any], text: bytes,
                  before_rename: Callable[[], None]) -> None:
    """Replace ``path`` by itself with the header's ``values`` set and ``text`` (whole images) after its images.

    ``index``: the file's, checked against it (its classes, split names and image count);
    ``before_rename``: runs once the new file is written and fsynced, before it replaces ``path``.
    ``NotStreamable`` (raised before ``before_rename``): ``path`` is as it was, the temp file removed.
    """
    with replaced(path) as (source, out):
        _write_appended(source, out, index, values, text)
        out.flush()
        os.fsync(out.fileno())  # before the moves: a kill between them and the rename leaves the least behind
        before_rename()


def _write_appended(source: IO[bytes], out: IO[bytes], index: DatasetIndex, values: dict[str, Any], text: bytes) -> None:
    header, rest = read_header(source, _CHUNK, SET_KEYS)
    if header["classes"] != index.classes or header["split_names"] != index.split_names:
        raise NotStreamable("the header is not the index's")
    header.update(values)  # keys keep their places
    out.write(encode_pretty(header)[:-2] + b',\n  "images": [')
    copied = 0
    if rest is not None:
        for piece in image_pieces(rest, source, _CHUNK):
            if copied:
                out.write(b",")  # the comma between two pieces belongs to neither
            out.write(piece)
            copied += piece.count(BOUNDARY) + 1
        out.write(b",")
    if copied != len(index):
        raise NotStreamable(f"the file has {copied} images, the index {len(index)}")
    out.write(text + ARRAY_END + b"\n")


def _joined_stats(existing: dict[str, Any], images: list[dict[str, Any]]) -> dict[str, Any]:
    """``document.image_stats`` of the existing images (``existing``: theirs) and ``images`` together."""
    added = image_stats(images)
    if not existing["num_images"]:
        return added
    return {
        "num_images": existing["num_images"] + added["num_images"],
        "min_width": min(existing["min_width"], added["min_width"]),
        "max_width": max(existing["max_width"], added["max_width"]),
        "min_height": min(existing["min_height"], added["min_height"]),
        "max_height": max(existing["max_height"], added["max_height"]),
        "formats": sorted({*existing["formats"], *added["formats"]}),
    }


class _FoldedNames:
    """``unique_name``'s ``taken`` over an index: its casefolded names (gathered on the first question) and those added."""

    def __init__(self, index: DatasetIndex) -> None:
        self._index = index
        self._existing: set[bytes] | None = None
        self._added: set[str] = set()

    def __contains__(self, name: object) -> bool:
        if name in self._added:
            return True
        if self._existing is None:
            self._existing = self._index.casefolded_names()
        return isinstance(name, str) and name.encode("utf-8", "surrogatepass") in self._existing

    def add(self, name: str) -> None:
        self._added.add(name)
