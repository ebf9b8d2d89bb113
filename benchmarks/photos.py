"""Photo-sized JPEG fixtures for the loader benchmarks: 500x375, the size of a typical web/dataset photo.

The data pipeline's tricks (draft decoding, the decoded-image cache) only pay
off on images much larger than the training size, so the loader and
real-vs-synthetic benchmarks need such files. They are generated (shapes on a
noisy background, JPEG quality 90), never downloaded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.core.sample_data import SHAPES, draw_shape

PHOTO_SIZE = (500, 375)  # width, height


def write_photo_jpegs(root: Path, count: int, seed: int = 0, size: tuple[int, int] = PHOTO_SIZE) -> list[Path]:
    """``count`` JPEGs of ``size`` under ``root/<shape>/``, classes round-robin; returns their paths."""
    rng = random.Random(seed)
    width, height = size
    paths = []
    for i in range(count):
        shape = SHAPES[i % len(SHAPES)]
        folder = Path(root) / shape
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{shape}_{i:05d}.jpg"
        draw_shape(shape, max(width, height), rng).crop((0, 0, width, height)).save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


@dataclass
class PhotoProject:
    """A workspace project holding imported photo JPEGs with one split (``train_fraction`` train, rest val)."""

    services: Any
    project_id: str
    dataset: dict[str, Any]
    images_dir: Path


def photo_project(root: Path, count: int, train_fraction: float = 0.9, seed: int = 0) -> PhotoProject:
    """Import ``count`` generated photos through the real dataset service and split them."""
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.jsonio import read_json
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    source = Path(root) / "photos"
    write_photo_jpegs(source, count, seed=seed)
    services = build_services(Settings(workspace=Path(root) / "workspace", import_roots=[source]))
    project_id = services.projects.create("bench-photos").id
    services.datasets.import_local(project_id, str(source), format="imagefolder")
    services.splits.create(project_id, "bench", Ratios(train=train_fraction, val=1.0 - train_fraction), seed=seed)
    dataset = read_json(services.workspace.dataset_json(project_id))
    return PhotoProject(services, project_id, dataset, services.workspace.images_dir(project_id))
