"""A tiny real dataset in a project: generated shape images plus a DESIGN-format ``dataset.json``.

Stands in for the dataset import (another issue) so training, evaluation and
export tests have real images: ``per_class`` PNGs per shape at ``size`` px,
one split named ``default`` that puts 60 % of each class in train, 20 % in val
and 20 % in test (deterministic, stratified).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from modelyard.core.jsonio import atomic_write_json
from modelyard.core.sample_data import SHAPES, generate_shapes
from modelyard.core.timeutil import utc_now_iso


def _subset(index: int, per_class: int) -> str:
    n_train = max(1, round(per_class * 0.6))
    n_val = max(1, round(per_class * 0.2))
    if index < n_train:
        return "train"
    if index < n_train + n_val:
        return "val"
    return "test"


def write_shapes_dataset(
    project_dir: Path,
    per_class: int = 10,
    size: int = 20,
    num_classes: int = 3,
    seed: int = 0,
    image_format: str = "PNG",
) -> dict[str, Any]:
    """Fill ``project_dir/dataset`` with generated shapes and return the ``dataset.json`` it wrote."""
    classes = list(SHAPES[:num_classes])
    images_dir = project_dir / "dataset" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        generate_shapes(Path(tmp), per_class=per_class, size=size, seed=seed, shapes=tuple(classes), image_format=image_format)
        for class_id, name in enumerate(classes):
            for index, source in enumerate(sorted((Path(tmp) / name).iterdir())):
                target = images_dir / source.name
                shutil.copyfile(source, target)
                data = target.read_bytes()
                with Image.open(target) as img:
                    width, height, fmt = img.width, img.height, (img.format or "").lower()
                records.append(
                    {
                        "filename": target.name,
                        "width": width,
                        "height": height,
                        "size": len(data),
                        "format": fmt,
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "source_path": f"{name}/{source.name}",
                        "split": [_subset(index, per_class)],
                        "annotations": [{"type": "label", "class_id": class_id, "class_name": name}],
                    }
                )
    dataset = {
        "version": 1,
        "task": "classification",
        "source": {"kind": "generated", "format": "imagefolder", "imported_at": utc_now_iso()},
        "classes": classes,
        "split_names": ["default"],
        "image_stats": {
            "num_images": len(records),
            "min_width": size,
            "max_width": size,
            "min_height": size,
            "max_height": size,
            "formats": sorted({r["format"] for r in records}),
        },
        "images": records,
    }
    atomic_write_json(project_dir / "dataset" / "dataset.json", dataset)
    return dataset


def create_project_with_dataset(services: Any, name: str = "Shapes", **dataset_options: Any) -> str:
    """A new project (through ``ProjectService``) holding a generated shapes dataset; returns its id."""
    project = services.projects.create(name)
    write_shapes_dataset(services.workspace.project_dir(project.id), **dataset_options)
    return str(project.id)
