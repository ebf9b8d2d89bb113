"""``csv``: a ``filename,label`` file beside the images.

The root holds one ``*.csv`` file (``labels.csv`` preferred) whose header row
has ``filename`` and ``label`` columns (optionally ``split``); filenames are
relative to the root. An empty label means unlabelled. Rows naming files
outside the root are reported as records the import will skip.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from modelyard.core import ImageRecord, hookimpl

PREFERRED = ("labels.csv", "annotations.csv", "dataset.csv")
SUBSETS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _find_csv(root: Path) -> Path | None:
    for name in PREFERRED:
        if (root / name).is_file():
            return root / name
    candidates = sorted(p for p in root.glob("*.csv") if p.is_file())
    return candidates[0] if len(candidates) == 1 else None


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        first = handle.readline()
    return [c.strip().lower() for c in next(csv.reader([first]), [])]


class CsvImporter:
    id = "csv"
    name = "CSV labels"
    description = "A filename,label CSV file (optional split column) beside the images."

    def detect(self, root: Path) -> bool:
        path = _find_csv(root) if root.is_dir() else None
        if path is None:
            return False
        try:
            header = _header(path)
        except (OSError, UnicodeDecodeError):
            return False
        return "filename" in header and "label" in header

    def read(self, root: Path) -> Iterator[ImageRecord]:
        path = _find_csv(root)
        if path is None:
            return
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = {name.strip().lower(): name for name in (reader.fieldnames or [])}
            if "filename" not in fields or "label" not in fields:
                return
            for row in reader:
                filename = (row.get(fields["filename"]) or "").strip()
                if not filename:
                    continue
                label = (row.get(fields["label"]) or "").strip() or None
                subset = None
                if "split" in fields:
                    subset = SUBSETS.get((row.get(fields["split"]) or "").strip().lower())
                relative = filename.replace("\\", "/")
                yield ImageRecord(path=root / relative, source_path=relative, label=label, subset=subset)


@hookimpl
def register_importers(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(CsvImporter())
