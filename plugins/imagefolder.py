"""``imagefolder``: one folder per class, optionally under ``train/ val/ test/``.

``root/cat/1.jpg`` is labelled ``cat``; ``root/train/cat/1.jpg`` is labelled
``cat`` and pre-assigned to the ``train`` subset. Files directly in the root
are unlabelled. Hidden files and folders (``.thumbs``, ``__MACOSX``) are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from modelyard.core import ImageRecord, hookimpl

SUBSET_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IGNORED_DIRS = {"__MACOSX"}


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in IGNORED_DIRS


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if _visible(p.name) and p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _files_under(folder: Path) -> Iterator[Path]:
    """Every non-hidden entry that is not a directory, recursively, in sorted order, not following symlinks."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for name in sorted(filenames):
            if _visible(name):
                yield Path(dirpath) / name
        # symlinked directories appear in dirnames but os.walk does not descend; report them as entries
        for name in list(dirnames):
            if (Path(dirpath) / name).is_symlink():
                yield Path(dirpath) / name


class ImageFolderImporter:
    id = "imagefolder"
    name = "Image folder"
    description = "One folder per class (optionally under train/ val/ test/); files in the root are unlabelled."

    def detect(self, root: Path) -> bool:
        return root.is_dir()

    def read(self, root: Path) -> Iterator[ImageRecord]:
        subdirs = _subdirs(root)
        split_dirs = [d for d in subdirs if d.name.lower() in SUBSET_NAMES]
        if split_dirs and len(split_dirs) == len(subdirs):
            for split_dir in split_dirs:
                yield from self._read_classes(root, split_dir, SUBSET_NAMES[split_dir.name.lower()])
        else:
            yield from self._read_classes(root, root, None)

    def _read_classes(self, root: Path, base: Path, subset: str | None) -> Iterator[ImageRecord]:
        for entry in sorted(base.iterdir()):
            if not _visible(entry.name):
                continue
            if entry.is_dir() and not entry.is_symlink():
                for path in _files_under(entry):
                    yield ImageRecord(path=path, source_path=path.relative_to(root).as_posix(), label=entry.name, subset=subset)
            else:
                yield ImageRecord(path=entry, source_path=entry.relative_to(root).as_posix(), label=None, subset=subset)


@hookimpl
def register_importers(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(ImageFolderImporter())
