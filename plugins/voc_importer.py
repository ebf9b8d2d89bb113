"""``voc``: object detection boxes from Pascal VOC XML files.

Layout: ``root/Annotations/*.xml`` beside ``root/JPEGImages/``; optional
``root/ImageSets/Main/{train,val,test}.txt`` (one id per line) set the
subsets. Each XML names its image in ``<filename>`` (looked up in
``JPEGImages/``; without one, the image with the XML's stem and an image
extension) and its objects as ``<object><name/><bndbox><xmin/>...</bndbox></object>``.

VOC coordinates are 1-based pixel indexes, both ends included; like
detectron2, a box becomes ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``
in modelyard's 0-based ``[x, y, w, h]``. ``difficult`` objects are kept (as
detectron2 does; there is no "ignore" flag in ``dataset.json``).

The XML is parsed with expat directly, and only what VOC needs is kept: a
document with a DOCTYPE (and so any entity declaration, the billion-laughs
attack or an external entity) is refused before anything is expanded, as is
one nested deeper than a VOC file ever is. A file that cannot be used refuses
its image with a ``skipped`` entry naming the XML file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from modelyard.core import BoxLabel, ImageRecord, SourceFileError, hookimpl, read_source_file

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG")
SUBSET_FILES = {"train": "train", "val": "val", "test": "test"}
MAX_XML_BYTES = 4 * 1024 * 1024
MAX_ID_LIST_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 16
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


class VocFileError(ValueError):
    """An XML file that cannot be used; the message is the reason shown in ``skipped``."""


@dataclass
class _Object:
    name: str = ""
    box: dict[str, str] = field(default_factory=dict)


@dataclass
class _Annotation:
    filename: str | None = None
    objects: list[_Object] = field(default_factory=list)


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


class VocImporter:
    id = "voc"
    name = "Pascal VOC XML"
    description = "Annotations/*.xml (Pascal VOC boxes) beside JPEGImages/; ImageSets/Main/*.txt set the subsets."
    tasks = ("object_detection",)

    def detect(self, root: Path) -> bool:
        return _real_dir(root / "Annotations") and _real_dir(root / "JPEGImages")

    def read(self, root: Path) -> Iterator[ImageRecord]:
        subsets = _subsets(root)
        folder = root / "Annotations"
        for xml_path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and not p.name.startswith(".")):
            yield _record(root, xml_path, subsets.get(xml_path.stem))


def _record(root: Path, xml_path: Path, subset: str | None) -> ImageRecord:
    shown = xml_path.relative_to(root).as_posix()
    try:
        annotation = parse_voc(read_source_file(xml_path, root, MAX_XML_BYTES))
        image = _image_path(root, xml_path.stem, annotation.filename)
        boxes = tuple(_box(number, obj) for number, obj in enumerate(annotation.objects, start=1))
    except SourceFileError as exc:
        return ImageRecord(path=xml_path, source_path=shown, subset=subset, problem=f"annotation file {exc.reason}")
    except VocFileError as exc:
        return ImageRecord(path=xml_path, source_path=shown, subset=subset, problem=f"{shown}: {exc}")
    return ImageRecord(path=image, source_path=image.relative_to(root).as_posix(), subset=subset, boxes=boxes)


def parse_voc(data: bytes) -> _Annotation:
    """The image name and objects of a VOC XML document; ``VocFileError`` for anything else (a DOCTYPE included)."""
    found = _Annotation()
    stack: list[str] = []
    text: list[str] = []
    current: list[_Object] = []

    def refuse_doctype(*_: object) -> None:
        raise VocFileError("XML with a DOCTYPE (entity declarations) is refused")

    def start(tag: str, _attrs: object) -> None:
        if len(stack) >= MAX_DEPTH:
            raise VocFileError(f"XML nested deeper than {MAX_DEPTH} levels")
        if not stack and tag != "annotation":
            raise VocFileError(f"not a VOC annotation (the root element is <{tag[:50]}>, not <annotation>)")
        stack.append(tag)
        text.clear()
        if stack == ["annotation", "object"]:
            current.append(_Object())

    def end(tag: str) -> None:
        value = "".join(text).strip()
        text.clear()
        path = tuple(stack)
        stack.pop()
        if path == ("annotation", "filename"):
            found.filename = value
        elif path == ("annotation", "object", "name") and current:
            current[-1].name = value
        elif len(path) == 4 and path[:3] == ("annotation", "object", "bndbox") and path[3] in BOX_TAGS and current:
            current[-1].box[path[3]] = value
        elif path == ("annotation", "object"):
            found.objects.append(current.pop())

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.ExternalEntityRefHandler = refuse_doctype
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text.append
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise VocFileError(f"malformed XML ({expat.ErrorString(exc.code)}, line {exc.lineno})") from None
    return found


def _box(number: int, obj: _Object) -> BoxLabel:
    if not obj.name:
        raise VocFileError(f"object {number} has no <name>")
    missing = [tag for tag in BOX_TAGS if tag not in obj.box]
    if missing:
        raise VocFileError(f"object {number} ({obj.name}) lacks <{'>, <'.join(missing)}> in <bndbox>")
    try:
        xmin, ymin, xmax, ymax = (float(obj.box[tag]) for tag in BOX_TAGS)
    except ValueError:
        raise VocFileError(f"object {number} ({obj.name}) has a <bndbox> value that is not a number") from None
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
        raise VocFileError(f"object {number} ({obj.name}) has a non-finite <bndbox> value")
    return BoxLabel(class_name=obj.name, bbox=(xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1))


def _image_path(root: Path, stem: str, filename: str | None) -> Path:
    images = root / "JPEGImages"
    if filename:
        name = filename.replace("\\", "/")
        if "/" in name or name in (".", "..") or "\x00" in name:
            raise VocFileError(f"<filename> {filename[:200]!r} must be a file name inside JPEGImages/")
        return images / name
    for suffix in IMAGE_SUFFIXES:
        if os.path.lexists(images / f"{stem}{suffix}"):
            return images / f"{stem}{suffix}"
    return images / f"{stem}.jpg"


def _subsets(root: Path) -> dict[str, str]:
    """Image id -> subset from ``ImageSets/Main/{train,val,test}.txt`` (unreadable lists are ignored)."""
    found: dict[str, str] = {}
    folder = root / "ImageSets" / "Main"
    if not _real_dir(folder):
        return found
    for name, subset in SUBSET_FILES.items():
        path = folder / f"{name}.txt"
        if not os.path.lexists(path):
            continue
        try:
            text = read_source_file(path, root, MAX_ID_LIST_BYTES).decode("utf-8", "replace")
        except SourceFileError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if parts:
                found.setdefault(parts[0], subset)
    return found


@hookimpl
def register_importers(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(VocImporter())
