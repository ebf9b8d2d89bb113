"""``coco``: object detection boxes from a COCO JSON annotations file.

Where the file may be: ``root/*.json``, ``root/annotations/*.json`` or
``root/<train|valid|val|validation|test>/*.json`` (Roboflow's layout, which
also sets the images' subset), or the same places inside a single wrapper
folder. A JSON file counts when its first bytes are an object mentioning
``"images"``. An image's ``file_name`` is looked up beside the JSON file,
then in the root, then in ``root/images/``; it must be a relative path inside
the dataset (no ``..``, no absolute path: such an image is skipped).

Boxes are COCO's ``[x, y, w, h]`` in pixels; category names come from
``categories`` by id. An annotation naming an unknown category id, or a
malformed one, refuses its image with a reason. Crowd annotations
(``iscrowd: 1``) mark a region of many objects that COCO's own evaluation
ignores; modelyard's boxes have no "ignore" flag, so they are left out (as
torchvision's detection references do). Images without annotations are kept
as background images. A file that is not valid COCO is one ``skipped`` entry
naming the file.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelyard.core import BoxLabel, ImageRecord, SourceFileError, hookimpl, read_source_file

SUBSET_DIRS = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
#: An annotations file larger than this is refused (the whole file is parsed in memory).
MAX_JSON_BYTES = 512 * 1024 * 1024
PEEK_BYTES = 64 * 1024
IMAGE_FOLDERS = ("", "images")


class CocoFileError(ValueError):
    """The annotations file is not COCO; the message is the reason shown in ``skipped``."""


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _base_dirs(root: Path) -> list[Path]:
    """``root``, or its single visible sub-folder too when everything sits under one (a zipped folder)."""
    bases = [root]
    try:
        visible = [p for p in root.iterdir() if _visible(p.name)]
    except OSError:
        return bases
    if len(visible) == 1 and _real_dir(visible[0]):
        bases.append(visible[0])
    return bases


def _candidate_files(root: Path) -> list[tuple[Path, str | None]]:
    """JSON files where a COCO file may be, each with the subset its folder names."""
    found: list[tuple[Path, str | None]] = []
    for base in _base_dirs(root):
        folders: list[tuple[Path, str | None]] = [(base, None), (base / "annotations", None)]
        folders += [(base / name, subset) for name, subset in SUBSET_DIRS.items()]
        for folder, subset in folders:
            if not _real_dir(folder):
                continue
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            found += [(p, subset) for p in entries if p.suffix.lower() == ".json" and _visible(p.name)
                      and p.is_file() and not p.is_symlink()]
    return found


def _looks_like_coco(path: Path) -> bool:
    """Cheap: the first bytes are a JSON object that mentions ``"images"`` (no parsing)."""
    try:  # never blocks on a FIFO, never follows a link
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            head = handle.read(PEEK_BYTES) if stat.S_ISREG(os.fstat(handle.fileno()).st_mode) else b""
    except OSError:
        return False
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") and b'"images"' in head


def _subset_of_name(name: str) -> str | None:
    lowered = name.lower()
    for token in ("train", "val", "test"):
        if token in lowered:
            return "val" if token == "val" else token
    return None


class CocoImporter:
    id = "coco"
    name = "COCO JSON"
    description = "A COCO annotations JSON (images, categories, bbox annotations) beside or above the images."
    tasks = ("object_detection",)

    def detect(self, root: Path) -> bool:
        return root.is_dir() and any(_looks_like_coco(path) for path, _ in _candidate_files(root))

    def read(self, root: Path) -> Iterator[ImageRecord]:
        candidates = _candidate_files(root)
        # named explicitly on a folder where no JSON looks like COCO: each JSON file says why it is not
        files = [(path, subset) for path, subset in candidates if _looks_like_coco(path)] or candidates
        several = len(files) > 1
        for path, subset in files:
            if subset is None and several:
                subset = _subset_of_name(path.stem)
            yield from _read_file(root, path, subset)


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _read_file(root: Path, path: Path, subset: str | None) -> Iterator[ImageRecord]:
    shown = _relative(root, path)
    try:
        data = _load(read_source_file(path, root, MAX_JSON_BYTES))
        images, categories, by_image, problems, orphans = _parse(data)
    except SourceFileError as exc:
        yield ImageRecord(path=path, source_path=shown, problem=exc.reason)
        return
    except CocoFileError as exc:
        yield ImageRecord(path=path, source_path=shown, problem=f"not a valid COCO file: {exc}")
        return
    if orphans:
        yield ImageRecord(path=path, source_path=shown,
                          problem=f"{len(orphans)} annotation(s) refer to image ids not in 'images' (first: {orphans[0]!r})")
    for image in images:
        image_id, file_name = image["id"], image["file_name"]
        relative = _safe_relative(file_name)
        if relative is None:
            yield ImageRecord(path=path, source_path=shown,
                              problem=f"image id {image_id!r}: file_name {file_name[:200]!r} is not a relative path "
                                      "inside the dataset")
            continue
        file_path = _locate(root, path.parent, relative)
        source_path = _relative(root, file_path) if _is_under(file_path, root) else relative
        problem = problems.get(_key(image_id))
        if problem is not None:
            yield ImageRecord(path=file_path, source_path=source_path, subset=subset, problem=f"{shown}: {problem}")
            continue
        boxes = tuple(BoxLabel(class_name=categories[cat], bbox=bbox) for cat, bbox in by_image.get(_key(image_id), ()))
        yield ImageRecord(path=file_path, source_path=source_path, subset=subset, boxes=boxes)


def _load(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise CocoFileError(f"not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise CocoFileError(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise CocoFileError("JSON nested too deeply") from None


def _key(value: Any) -> tuple[str, Any]:
    """Ids compare by type and value (``1`` and ``"1"`` are different ids, and ``True`` is not ``1``)."""
    return (type(value).__name__, value)


def _valid_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value != "")


def _parse(data: Any) -> tuple[list[dict[str, Any]], dict[Any, str], dict[Any, list[tuple[Any, tuple[float, ...]]]],
                               dict[Any, str], list[Any]]:
    """Images, category names by id, boxes by image, a problem per refused image, and orphan image ids."""
    if not isinstance(data, dict):
        raise CocoFileError("the top level must be an object")
    images = data.get("images")
    annotations = data.get("annotations", [])
    categories = data.get("categories", [])
    for key, value in (("images", images), ("annotations", annotations), ("categories", categories)):
        if not isinstance(value, list):
            raise CocoFileError(f"'{key}' must be a list")
    names: dict[Any, str] = {}
    for number, category in enumerate(categories):
        if not isinstance(category, dict) or not _valid_id(category.get("id")) or not isinstance(category.get("name"), str):
            raise CocoFileError(f"categories[{number}] must have an integer or string 'id' and a string 'name'")
        key = _key(category["id"])
        if key in names and names[key] != category["name"]:
            raise CocoFileError(f"category id {category['id']!r} is given two names")
        names[key] = category["name"]
    kept: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for number, image in enumerate(images):
        if not isinstance(image, dict) or not _valid_id(image.get("id")) or not isinstance(image.get("file_name"), str):
            raise CocoFileError(f"images[{number}] must have an integer or string 'id' and a string 'file_name'")
        if _key(image["id"]) in seen:
            raise CocoFileError(f"image id {image['id']!r} appears twice")
        seen.add(_key(image["id"]))
        kept.append(image)
    by_image: dict[Any, list[tuple[Any, tuple[float, ...]]]] = {}
    problems: dict[Any, str] = {}
    orphans: list[Any] = []
    for number, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or not _valid_id(annotation.get("image_id")):
            raise CocoFileError(f"annotations[{number}] must be an object with an integer or string 'image_id'")
        image_key = _key(annotation["image_id"])
        if image_key not in seen:
            orphans.append(annotation["image_id"])
            continue
        if image_key in problems:
            continue
        if annotation.get("iscrowd") in (1, True):
            continue
        problem = _annotation_problem(annotation, names)
        if problem is not None:
            problems[image_key] = f"annotation {annotation.get('id', number)!r}: {problem}"
            continue
        bbox = tuple(float(v) for v in annotation["bbox"])
        by_image.setdefault(image_key, []).append((_key(annotation["category_id"]), bbox))
    return kept, names, by_image, problems, orphans


def _annotation_problem(annotation: dict[str, Any], names: dict[Any, str]) -> str | None:
    category = annotation.get("category_id")
    if not _valid_id(category):
        return "'category_id' must be an integer or a string"
    if _key(category) not in names:
        return f"unknown category id {category!r} (not in 'categories')"
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        return "'bbox' must be a list of 4 numbers [x, y, w, h]"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return "'bbox' must hold only numbers"
    try:
        if not all(math.isfinite(float(v)) for v in bbox):
            return f"'bbox' has a non-finite number {bbox!r}"
    except OverflowError:
        return "'bbox' has a number too large to use"
    return None


def _safe_relative(file_name: str) -> str | None:
    """``file_name`` with ``/`` separators if it is a plain relative path (no ``..``, not absolute), else ``None``."""
    name = file_name.replace("\\", "/")
    if not name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return name


def _locate(root: Path, json_dir: Path, relative: str) -> Path:
    """Where the image is: beside the JSON file, in the root, or in ``root/images`` (the first that exists)."""
    candidates = [json_dir / relative]
    if json_dir != root:
        candidates.append(json_dir.parent / "images" / relative)
    candidates += [root / folder / relative if folder else root / relative for folder in IMAGE_FOLDERS]
    for candidate in candidates:
        if os.path.lexists(candidate):  # lexists: a symlink is found (and then refused by the import), never followed
            return candidate
    return candidates[0]


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


@hookimpl
def register_importers(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(CocoImporter())
