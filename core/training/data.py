"""Training data: the split subsets of ``dataset.json``, decoded, resized and batched.

Loading must not be the bottleneck on small images, so:

- JPEGs much larger than the target are decoded at reduced scale (Pillow ``draft``);
- decoded, resized ``uint8`` images can be kept in memory (``data.cache``:
  ``auto`` does so when they fit ``data.cache_max_mb``), decoded once by a thread
  pool (Pillow releases the GIL);
- a batch is fetched in one call (``__getitems__``): with a cache and no
  augmentation it is a single tensor index, no per-image Python work;
- batches stay ``uint8`` until they reach the device, where the module converts
  and normalises them (4x less to copy).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..datasets.document import split_items  # re-exported: the engine's subsets come from here
from ..errors import CorruptDataError, ValidationError
from .augmentations import build_pipeline
from .config import ExperimentConfig

IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)
#: Decode at reduced JPEG scale only when the source is at least this many times the target.
DRAFT_FACTOR = 2
MIB = 1024 * 1024


def normalization(channels: int) -> tuple[list[float], list[float]]:
    """Mean and std the network sees (ImageNet statistics; their average for grayscale)."""
    if channels == 1:
        return [round(sum(IMAGENET_MEAN) / 3, 4)], [round(sum(IMAGENET_STD) / 3, 4)]
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def load_image(path: Path, image_size: Sequence[int], channels: int) -> torch.Tensor:
    """Decode ``path`` to a ``uint8`` CHW tensor of ``image_size`` (height, width)."""
    height, width = int(image_size[0]), int(image_size[1])
    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as img:
            if img.format == "JPEG" and img.width >= DRAFT_FACTOR * width and img.height >= DRAFT_FACTOR * height:
                img.draft(mode, (width, height))  # picks the smallest DCT scale still >= the target
            img = ImageOps.exif_transpose(img)
            if img.mode != mode:
                img = img.convert("RGBA").convert(mode) if img.mode in ("P", "LA", "PA") else img.convert(mode)
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptDataError(f"image {path.name} cannot be read: {exc}", {"file": path.name}) from None
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def decode_all(paths: Sequence[Path], image_size: Sequence[int], channels: int, threads: int | None = None) -> torch.Tensor:
    """Decode every path into one ``uint8`` tensor ``[N, C, H, W]`` (threads overlap decoding)."""
    out = torch.empty((len(paths), channels, int(image_size[0]), int(image_size[1])), dtype=torch.uint8)
    if not paths:
        return out
    threads = threads or min(8, os.cpu_count() or 1)

    def fill(index: int) -> None:
        out[index] = load_image(paths[index], image_size, channels)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(len(paths))))
    return out


class ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Labelled images of one subset; yields ``(uint8 images, int64 labels)`` batches via ``__getitems__``."""

    def __init__(
        self,
        items: Sequence[tuple[str, int]],
        images_dir: Path,
        image_size: Sequence[int],
        channels: int,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cached: torch.Tensor | None = None,
    ) -> None:
        self.paths = [images_dir / name for name, _ in items]
        self.labels = torch.tensor([label for _, label in items], dtype=torch.int64)
        self.image_size = tuple(image_size)
        self.channels = channels
        self.transform = transform
        self.cached = cached

    def __len__(self) -> int:
        return len(self.paths)

    def _image(self, index: int) -> torch.Tensor:
        image = self.cached[index] if self.cached is not None else load_image(self.paths[index], self.image_size, self.channels)
        return self.transform(image) if self.transform is not None else image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._image(index), self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        if self.cached is not None and self.transform is None:
            return self.cached.index_select(0, index), self.labels.index_select(0, index)
        return torch.stack([self._image(i) for i in indices]), self.labels.index_select(0, index)


class ShardSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``, without padding: each image is validated exactly once under DDP.

    (``DistributedSampler`` pads the last shard with repeated images, which
    would count them twice in the validation metrics.)
    """

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate_batch(batch: Any) -> Any:
    """``__getitems__`` already returns a batch; single items (no ``__getitems__`` path) are stacked."""
    if isinstance(batch, tuple):
        return batch
    images, labels = zip(*batch, strict=True)
    return torch.stack(images), torch.stack(labels)


def cache_bytes(num_images: int, image_size: Sequence[int], channels: int) -> int:
    return num_images * channels * int(image_size[0]) * int(image_size[1])


class ImageDataModule(L.LightningDataModule):
    """Train/val data of one split, as the config asks (size, channels, augmentations, cache, workers)."""

    def __init__(self, images_dir: Path, dataset: dict[str, Any], config: ExperimentConfig, pin_memory: bool = False) -> None:
        super().__init__()
        self.images_dir = Path(images_dir)
        self.config = config
        self.pin_memory = pin_memory
        self.class_names: list[str] = [str(c) for c in dataset.get("classes") or []]
        self.num_classes = len(self.class_names)
        self.mean, self.std = normalization(config.data.channels)
        split_index = config.split_index
        names = dataset.get("split_names") or []
        if split_index >= len(names):
            raise ValidationError(f"split_index {split_index} does not exist in the dataset", field="config.split_index")
        if self.num_classes < 2:
            raise ValidationError("the dataset needs at least two classes to train a classifier", field="dataset.classes")
        self.train_items = split_items(dataset, split_index, "train")
        self.val_items = split_items(dataset, split_index, "val")
        split_name = names[split_index]
        if not self.train_items:
            raise ValidationError(f"split '{split_name}' has no labelled training images", field="config.split_index")
        if not self.val_items:
            raise ValidationError(f"split '{split_name}' has no labelled validation images", field="config.split_index")
        self.cache_used = False
        self.train_set: ImageDataset | None = None
        self.val_set: ImageDataset | None = None

    # -- facts the engine records ------------------------------------------------
    def class_counts(self) -> list[int]:
        counts = [0] * self.num_classes
        for _, label in self.train_items:
            counts[label] += 1
        return counts

    def balanced_class_weights(self) -> list[float]:
        """``n / (k * n_c)`` per class (1.0 for a class with no training image)."""
        counts = self.class_counts()
        total = sum(counts)
        return [total / (self.num_classes * c) if c else 1.0 for c in counts]

    def should_cache(self) -> bool:
        data = self.config.data
        if data.cache == "none":
            return False
        if data.cache == "memory":
            return True
        needed = cache_bytes(len(self.train_items) + len(self.val_items), data.image_size, data.channels)
        return needed <= data.cache_max_mb * MIB

    def resolved_num_workers(self) -> int:
        """``auto``: no worker processes when batches come straight from memory; else up to 4."""
        workers = self.config.data.num_workers
        if workers != "auto":
            return int(workers)
        if self.cache_used and not self.config.data.augmentations.train:
            return 0
        return max(0, min(4, (os.cpu_count() or 1) - 1))

    # -- Lightning hooks -----------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data = self.config.data
        size, channels = data.image_size, data.channels
        train_cache = val_cache = None
        if self.should_cache():
            train_cache = decode_all([self.images_dir / n for n, _ in self.train_items], size, channels)
            val_cache = decode_all([self.images_dir / n for n, _ in self.val_items], size, channels)
            self.cache_used = True
        train_tf = build_pipeline(data.augmentations.train, size, "config.data.augmentations.train")
        val_tf = build_pipeline(data.augmentations.val, size, "config.data.augmentations.val")
        self.train_set = ImageDataset(self.train_items, self.images_dir, size, channels, train_tf, train_cache)
        self.val_set = ImageDataset(self.val_items, self.images_dir, size, channels, val_tf, val_cache)

    def _loader(self, dataset: ImageDataset | None, train: bool) -> DataLoader[Any]:
        assert dataset is not None, "setup() must run first"
        workers = self.resolved_num_workers()
        rank, world = self._rank_and_world()
        sampler: Sampler[int] | None = None
        if world > 1:  # the Trainer is told not to swap samplers; these are ours
            sampler = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                          seed=self.config.training.seed)
                       if train else ShardSampler(len(dataset), rank, world))
        return DataLoader(
            dataset,
            batch_size=self.config.data.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=collate_batch,
        )

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.val_set, train=False)
