"""Is a dataset source (a folder or a ZIP) already exactly the project's dataset?

A pipeline re-run must not import its data again, so before importing it
compares the source's ``(image sha256, label)`` pairs, read through the same
importer plugin an import would use, with the pairs of ``dataset.json``. The
files are only hashed here; importing still goes through the dataset service
(validation, safe ZIP extraction, atomic commit).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any

from ..datasets.document import class_name
from ..datasets.zipsafe import extract_zip
from ..errors import ValidationError
from ..plugin_types import DatasetImporter
from ..registry import ImporterRegistry
from ..settings import Settings
from ..workspace import Workspace

Pairs = frozenset[tuple[str, str]]


def resolve_source(raw: str, base_dir: Path) -> Path:
    """The absolute path of a pipeline's ``dataset.path`` (relative to the pipeline file's folder); must exist."""
    if not raw or "\x00" in raw or len(raw) > 4096:
        raise ValidationError("dataset.path must be a non-empty path without NUL characters", field="dataset.path")
    path = Path(os.path.expanduser(raw))
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if not (path.is_dir() or is_zip_file(path)):
        raise ValidationError(f"dataset.path {raw!r} is neither a folder nor a ZIP file ({path})", field="dataset.path",
                              details={"path": str(path)})
    return path


def is_zip_file(path: Path) -> bool:
    """A regular file with a ZIP signature (what ``dataset.path`` may name besides a folder)."""
    return path.is_file() and zipfile.is_zipfile(path)


def pick_importer(importers: ImporterRegistry, root: Path, format: str) -> DatasetImporter:  # noqa: A002
    """The importer an import of ``root`` would use (named, or detected for ``auto``)."""
    if format != "auto":
        return importers.get(format, field="dataset.format")
    importer = importers.detect(root)
    if importer is None:
        raise ValidationError("No importer recognises the dataset folder; name one in dataset.format",
                              field="dataset.format", details={"available": importers.names()})
    return importer


def dataset_pairs(dataset: dict[str, Any] | None) -> Pairs:
    """The ``(sha256, label)`` pairs of a ``dataset.json`` (label ``""`` for unlabelled images)."""
    images = (dataset or {}).get("images") or []
    return frozenset((str(image.get("sha256", "")), class_name(image) or "") for image in images)


def folder_pairs(importer: DatasetImporter, root: Path) -> Pairs:
    """The ``(sha256, label)`` pairs of the regular files the importer lists under ``root``."""
    pairs = set()
    for record in importer.read(root):
        try:
            info = os.lstat(record.path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):
            continue  # links, FIFOs...: an import skips them too
        digest = hashlib.sha256()
        with open(record.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        pairs.add((digest.hexdigest(), (record.label or "").strip()))
    return frozenset(pairs)


def source_matches(
    workspace: Workspace,
    settings: Settings,
    importers: ImporterRegistry,
    source: Path,
    format: str,  # noqa: A002
    dataset: dict[str, Any] | None,
) -> bool:
    """True when the source holds exactly the images and labels the dataset already has."""
    current = dataset_pairs(dataset)
    if not current:
        return False
    if not is_zip_file(source):
        return folder_pairs(pick_importer(importers, source, format), source) == current
    staging = workspace.new_staging_dir("pipeline-compare")
    try:
        root = extract_zip(source, staging / "extracted", max_entries=settings.zip_max_entries,
                           max_bytes=settings.zip_max_uncompressed_bytes)
        return folder_pairs(pick_importer(importers, root, format), root) == current
    finally:
        shutil.rmtree(staging, ignore_errors=True)
