"""Data loading: the engine's decode path and its decoded-image cache against plain Pillow.

* ``bench_draft_decode``: the engine's ``load_image`` (JPEG draft mode, i.e.
  decoding at a reduced DCT scale, then a reducing resize) against a plain
  ``open -> convert -> resize`` function, over the same photo-sized JPEGs,
  images/s. Target: ours >= 1.3x.
* ``bench_cached_vs_decode``: images/s of one training epoch from the
  engine's real ``ImageDataModule`` loader once its decoded-image cache is
  filled, against a plain ``Dataset`` + ``DataLoader`` that decodes and
  resizes every image with Pillow every epoch (same batch size, same
  in-process loading, no worker processes on either side). The cost of
  filling the cache once is recorded beside it. Target: ours >= 10x.

Both sides run interleaved (A B B A ...) in one process over the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.harness import Result, Side, interleave, throughput, timed
from benchmarks.photos import PhotoProject

IMAGE_PX = 64
BATCH = 64


def plain_decode_resize(path: Path, size: Sequence[int]) -> torch.Tensor:
    """What a hand-written loader does: full decode, convert, resize, to a ``uint8`` CHW tensor."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class PlainDecodeDataset(Dataset[tuple[torch.Tensor, int]]):
    """Decodes and resizes every image on every access (no cache)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], size: Sequence[int]) -> None:
        self.paths, self.labels, self.size = list(paths), list(labels), tuple(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return plain_decode_resize(self.paths[index], self.size), self.labels[index]


def loader_config(image_px: int = IMAGE_PX, batch: int = BATCH, cache: str = "memory", **training: Any) -> Any:
    """The experiment config the loader benchmarks give the engine's DataModule (CPU, no augmentation)."""
    from modelyard.core.training.config import parse_config

    return parse_config({
        "data": {"image_size": [image_px, image_px], "batch_size": batch, "cache": cache, "num_workers": "auto"},
        "training": {"early_stopping": None, "precision": "32", **training},
        "hardware": {"devices": ["cpu"]},
    })


def bench_draft_decode(project: PhotoProject, repeats: int, min_seconds: float = 0.5) -> Result:
    """Images/s of the engine's ``load_image`` vs ``plain_decode_resize`` over the project's photos."""
    from modelyard.core.training.worker.data import load_image

    paths = sorted(project.images_dir.iterdir())
    size = (IMAGE_PX, IMAGE_PX)

    def ours() -> float:
        return throughput(lambda: [load_image(p, size, 3) for p in paths], len(paths), min_seconds)

    def plain() -> float:
        return throughput(lambda: [plain_decode_resize(p, size) for p in paths], len(paths), min_seconds)

    with Image.open(paths[0]) as first:
        source_size = first.size
    ours_values, plain_values = interleave(ours, plain, repeats)
    return Result(
        id="loader_draft_decode",
        compares=(f"engine load_image (JPEG draft + reducing resize) vs plain Pillow open/convert/resize, "
                  f"{len(paths)} JPEGs {source_size[0]}x{source_size[1]} -> {IMAGE_PX}px, images/s, 1 thread"),
        ours=Side("load_image (draft)", "img/s", ours_values),
        against=Side("plain decode+resize", "img/s", plain_values),
        ratio_kind="ours/against", target=">= 1.3x", target_value=1.3, higher_is_better=True,
        extra={"images": len(paths), "source_size": list(source_size), "image_px": IMAGE_PX},
    )


def bench_cached_vs_decode(project: PhotoProject, repeats: int, min_seconds: float = 0.5) -> Result:
    """Epoch images/s of the engine's cached train loader vs a plain decode-every-epoch loader."""
    from modelyard.core.training.worker.data import ImageDataModule

    datamodule = ImageDataModule(project.images_dir, project.dataset, loader_config())
    fill_s = timed(lambda: datamodule.setup("fit"))
    if not datamodule.cache_used:
        raise RuntimeError("the DataModule did not cache the images; the benchmark would measure the wrong thing")
    ours_loader = datamodule.train_dataloader()
    filled = len(datamodule.train_items) + len(datamodule.val_items)
    items = datamodule.train_items
    plain_loader = DataLoader(
        PlainDecodeDataset([project.images_dir / name for name, _ in items], [label for _, label in items],
                           (IMAGE_PX, IMAGE_PX)),
        batch_size=BATCH, shuffle=True, num_workers=0,
    )

    def epoch(loader: DataLoader[Any]) -> None:
        for images, _labels in loader:
            assert images.dtype == torch.uint8  # both sides hand the model the same thing

    ours_values, plain_values = interleave(
        lambda: throughput(lambda: epoch(ours_loader), len(items), min_seconds),
        lambda: throughput(lambda: epoch(plain_loader), len(items), min_seconds),
        repeats,
    )
    return Result(
        id="loader_cached_vs_decode",
        compares=(f"engine ImageDataModule train loader with its decoded-image cache filled vs plain Dataset+DataLoader "
                  f"decoding+resizing with Pillow every epoch; {len(items)} JPEGs 500x375 -> {IMAGE_PX}px, batch {BATCH}, "
                  f"num_workers {ours_loader.num_workers} (both), epoch images/s"),
        ours=Side("cached loader", "img/s", ours_values),
        against=Side("plain decode each epoch", "img/s", plain_values),
        ratio_kind="ours/against", target=">= 10x", target_value=10.0, higher_is_better=True,
        notes=f"filling the cache once (train+val, {filled} images) took {fill_s:.2f} s ({filled / fill_s:.0f} img/s)",
        extra={"images": len(items), "cache_fill_s": fill_s,
               "cache_fill_images": filled, "num_workers": ours_loader.num_workers},
    )
