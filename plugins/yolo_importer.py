"""``yolo``: object detection boxes from YOLO label files (Ultralytics / Darknet layout).

Layouts: ``root/images/...`` beside ``root/labels/...`` (optionally split into
``train/ val/ test/`` below both), or ``root/<train|valid|val|test>/images``
beside ``.../labels`` (Roboflow). The image ``images/a/b.jpg`` has the label
file ``labels/a/b.txt``; no label file means a background image. Class names
come from ``data.yaml`` / ``data.yml`` (``names`` as a list or an
``{index: name}`` mapping; read with ``yaml.safe_load`` and nothing else of
it is used: its paths are never followed) or from ``classes.txt``, one name
per line.

A label line is ``class cx cy w h``, normalised to the image size. The
importer converts it to pixels itself, reading only the image's header
(``source_image_size``: inside the import folder, never a link, EXIF
rotation applied, as the stored width and height are), so ``dataset.json``
holds pixels like every other format. Staging still decodes the image and
clips or refuses the boxes. A malformed label file (wrong column count, a
non-number, a class index without a name, not UTF-8, a directory...) refuses
its image with a ``skipped`` entry naming the label file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelyard.core import BoxLabel, ImageRecord, SourceFileError, hookimpl, read_source_file, source_image_size

SUBSET_DIRS = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
CLASS_FILES = ("data.yaml", "data.yml", "classes.txt")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_CLASS_FILE_BYTES = 1024 * 1024
MAX_LABEL_FILE_BYTES = 4 * 1024 * 1024
MAX_CLASSES = 10_000


class LabelError(ValueError):
    """A label or class file that cannot be used; the message is the reason shown in ``skipped``."""


def _visible(name: str) -> bool:
    return not name.startswith(".") and name != "__MACOSX"


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _class_file(root: Path) -> Path | None:
    for name in CLASS_FILES:
        if os.path.lexists(root / name):
            return root / name
    return None


def _pairs(root: Path) -> list[tuple[Path, Path, str | None]]:
    """``(images folder, labels folder, subset)`` of every part of the dataset."""
    found: list[tuple[Path, Path, str | None]] = []
    if _real_dir(root / "images"):
        subsets = [(name, subset) for name, subset in SUBSET_DIRS.items() if _real_dir(root / "images" / name)]
        if subsets:
            found += [(root / "images" / name, root / "labels" / name, subset) for name, subset in subsets]
        else:
            found.append((root / "images", root / "labels", None))
    for name, subset in SUBSET_DIRS.items():
        if _real_dir(root / name / "images"):
            found.append((root / name / "images", root / name / "labels", subset))
    return found


class YoloImporter:
    id = "yolo"
    name = "YOLO"
    description = "images/ beside labels/*.txt ('class cx cy w h', normalised) with data.yaml names or classes.txt."
    tasks = ("object_detection",)

    def detect(self, root: Path) -> bool:
        if not root.is_dir() or _class_file(root) is None:
            return False
        return any(_real_dir(labels) for _, labels, _ in _pairs(root))

    def read(self, root: Path) -> Iterator[ImageRecord]:
        class_file = _class_file(root)
        if class_file is None:
            return
        try:
            names = _class_names(class_file, root)
        except SourceFileError as exc:
            yield ImageRecord(path=class_file, source_path=class_file.name, problem=exc.reason)
            return
        except LabelError as exc:
            yield ImageRecord(path=class_file, source_path=class_file.name, problem=str(exc))
            return
        for images, labels, subset in _pairs(root):
            for image in _image_files(images):
                yield _record(root, image, labels / image.relative_to(images).with_suffix(".txt"), subset, names)


def _image_files(folder: Path) -> Iterator[Path]:
    """Image files below ``folder`` in sorted order, not following symlinked folders (a symlinked file is yielded and refused)."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for name in sorted(filenames):
            if _visible(name) and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(dirpath) / name


def _record(root: Path, image: Path, label_file: Path, subset: str | None, names: list[str]) -> ImageRecord:
    source_path = image.relative_to(root).as_posix()
    if not os.path.lexists(label_file):
        return ImageRecord(path=image, source_path=source_path, subset=subset, boxes=())
    label_path = label_file.relative_to(root).as_posix()
    try:
        lines = _label_lines(read_source_file(label_file, root, MAX_LABEL_FILE_BYTES), names)
    except SourceFileError as exc:
        return ImageRecord(path=label_file, source_path=label_path, subset=subset, problem=f"label file {exc.reason}")
    except LabelError as exc:
        return ImageRecord(path=label_file, source_path=label_path, subset=subset, problem=str(exc))
    if not lines:
        return ImageRecord(path=image, source_path=source_path, subset=subset, boxes=())
    try:
        width, height = source_image_size(image, root)
    except SourceFileError:  # staging reads the image itself and reports exactly what is wrong with it
        return ImageRecord(path=image, source_path=source_path, subset=subset, boxes=())
    boxes = tuple(
        BoxLabel(class_name=name, bbox=((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height))
        for name, cx, cy, w, h in lines
    )
    return ImageRecord(path=image, source_path=source_path, subset=subset, boxes=boxes)


def _label_lines(raw: bytes, names: list[str]) -> list[tuple[str, float, float, float, float]]:
    """``(class name, cx, cy, w, h)`` of each line; ``LabelError`` names the first bad line."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabelError("label file is not UTF-8 text") from None
    boxes = []
    for number, line in enumerate(text.splitlines(), start=1):
        columns = line.split()
        if not columns:
            continue
        if len(columns) != 5:
            raise LabelError(f"line {number}: expected 5 columns 'class cx cy w h', found {len(columns)}")
        try:
            index = int(columns[0])
            values = [float(v) for v in columns[1:]]
        except ValueError:
            raise LabelError(f"line {number}: the class must be an integer and the box four numbers") from None
        if not 0 <= index < len(names):
            raise LabelError(f"line {number}: class index {index} has no name (the dataset names {len(names)} classes)")
        if not all(math.isfinite(v) for v in values):
            raise LabelError(f"line {number}: the box has a non-finite number")
        boxes.append((names[index], *values))
    return boxes  # type: ignore[return-value]


def _class_names(path: Path, root: Path) -> list[str]:
    raw = read_source_file(path, root, MAX_CLASS_FILE_BYTES)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LabelError(f"{path.name} is not UTF-8 text") from None
    if path.suffix == ".txt":
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        names = _yaml_names(text, path.name)
    if not names:
        raise LabelError(f"{path.name} names no classes")
    if len(names) > MAX_CLASSES:
        raise LabelError(f"{path.name} names more than {MAX_CLASSES} classes")
    return names


def _yaml_names(text: str, shown: str) -> list[str]:
    import yaml

    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabelError(f"{shown} is not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise LabelError(f"{shown} is nested too deeply") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, list):
        if not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names):
            raise LabelError(f"{shown}: 'names' must list class names")
        return [str(n) for n in names]
    if isinstance(names, dict):
        keys = list(names)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys) or sorted(keys) != list(range(len(keys))):
            raise LabelError(f"{shown}: 'names' as a mapping must have the keys 0, 1, 2, ...")
        if not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in names.values()):
            raise LabelError(f"{shown}: 'names' must map indexes to class names")
        return [str(names[k]) for k in range(len(keys))]
    raise LabelError(f"{shown} has no 'names' list or mapping")


@hookimpl
def register_importers(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(YoloImporter())
