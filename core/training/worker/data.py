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

For an exact resume the train order and every augmentation are functions of
``(seed, epoch, index)`` (``sampling.py``), and under DDP each rank decodes
only its own shard. A validation shard is padded to the same length on every
rank with masked items (the task's padding target, counted in no metric), so
all ranks run the same validation steps and none waits for another in a
collective.

What an image's target is (a class id, boxes, a number) is the task's
business (``core/training/task_runtime.py``): this module stores, batches and
augments targets only through the task's ``TargetStore`` and ``augment``. The
dataset it hands the task is a ``DatasetView`` over the dataset's index (the
engine maps it from the ``.dataset.index`` cache), never the parsed
``dataset.json``: a million-image document would cost every DDP rank seconds
and gigabytes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from ...datasets.document import split_items  # re-exported: the engine's subsets come from here
from ...datasets.view import as_view
from ...errors import CorruptDataError, ValidationError
from ..augmentations import compose_augmentations, flip_plan
from ..config import ExperimentConfig
from ..task_runtime import TargetStore, TaskRuntime
from .sampling import (
    VAL_STREAM,
    EpochSampler,
    ResumableLoader,
    mix_seed,
    positions_of,
    sample_seed,
    shard_positions,
)

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
    try:
        with Image.open(path) as img:
            return image_tensor(img, image_size, channels)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptDataError(f"image {path.name} cannot be read: {exc}", {"file": path.name}) from None


def image_tensor(img: Image.Image, image_size: Sequence[int], channels: int) -> torch.Tensor:
    """An opened image as the network's ``uint8`` CHW input of ``image_size``: the one image preprocessing.

    Training, evaluation and prediction all come through here (and the
    bundle's ``preprocessing.json`` describes it): JPEG draft, EXIF
    orientation, colour mode, a straight bilinear resize. Pillow's errors
    propagate; callers say which file failed.
    """
    height, width = int(image_size[0]), int(image_size[1])
    mode = "RGB" if channels == 3 else "L"
    if img.format == "JPEG" and img.width >= DRAFT_FACTOR * width and img.height >= DRAFT_FACTOR * height:
        img.draft(mode, (width, height))  # picks the smallest DCT scale still >= the target
    img = ImageOps.exif_transpose(img)
    if img.mode != mode:
        img = img.convert("RGBA").convert(mode) if img.mode in ("P", "LA", "PA") else img.convert(mode)
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    array = np.asarray(img, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def decode_all(paths: Sequence[Path], image_size: Sequence[int], channels: int, threads: int | None = None,
               on_progress: Callable[[], None] | None = None) -> torch.Tensor:
    """Decode every path into one ``uint8`` tensor ``[N, C, H, W]`` (threads overlap decoding).

    ``on_progress`` is called after each image (the engine's rate-limited heartbeat: a long decode is alive).
    """
    out = torch.empty((len(paths), channels, int(image_size[0]), int(image_size[1])), dtype=torch.uint8)
    if not paths:
        return out
    threads = threads or min(8, os.cpu_count() or 1)

    def fill(index: int) -> None:
        out[index] = load_image(paths[index], image_size, channels)
        if on_progress is not None:
            on_progress()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(fill, range(len(paths))))
    return out


class ImageDataset(Dataset[tuple[torch.Tensor, Any]]):
    """Annotated images of one subset; yields ``(uint8 images, targets)`` batches via ``__getitems__``.

    Keys are positions or the train sampler's ``(epoch, position)`` pairs. A
    random transform runs on the CPU generator reseeded from ``(seed, epoch,
    image)`` and put back afterwards, so an image's augmentation is the same
    whatever process, worker or RNG stream draws it (exact resume). ``targets``
    holds ``pad`` extra masked items (zero pixels, the task's padding target)
    that even out DDP shards.
    """

    def __init__(
        self,
        filenames: Sequence[str],
        targets: TargetStore,
        images_dir: Path,
        image_size: Sequence[int],
        channels: int,
        transform: Callable[..., Any] | None = None,
        cached: torch.Tensor | None = None,
        seed: int = 0,
        ids: Sequence[int] | None = None,
        runtime: TaskRuntime | None = None,
    ) -> None:
        self.paths = [images_dir / name for name in filenames]
        self.targets = targets
        self.image_size = tuple(image_size)
        self.channels = channels
        self.transform = transform
        self.runtime = runtime
        if transform is not None and runtime is None:
            raise ValueError("an augmented dataset needs the task runtime that moves its targets")
        self.cached = cached
        self.seed = seed
        #: each item's index in the whole subset (its augmentation seed does not depend on the DDP shard)
        self.ids = list(ids) if ids is not None else list(range(len(filenames)))
        self.pad = len(targets) - len(self.paths)
        #: a flip-only pipeline as ``(axis, p)`` steps: applied to a whole batch at once (``_flipped_batch``)
        self.flips = flip_plan(transform) if transform is not None else None

    def __len__(self) -> int:
        return len(self.targets)

    def _pixels(self, index: int) -> torch.Tensor:
        if index >= len(self.paths):
            return torch.zeros((self.channels, *self.image_size), dtype=torch.uint8)
        return self.cached[index] if self.cached is not None else load_image(self.paths[index], self.image_size, self.channels)

    def _item(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, Any]:
        image, target = self._pixels(index), self.targets.item(index)
        if self.transform is None or index >= len(self.paths):
            return image, target
        assert self.runtime is not None
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, self.ids[index]))
        try:
            return self.runtime.augment(self.transform, image, target)
        finally:
            generator.set_state(state)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return self._item(index, epoch)

    def __getitems__(self, keys: list[Any]) -> tuple[torch.Tensor, Any]:
        indices = positions_of(keys)
        if self.transform is None:
            if self.cached is not None and (not self.pad or max(indices, default=0) < len(self.paths)):
                index = torch.as_tensor(indices, dtype=torch.int64)
                return self.cached.index_select(0, index), self.targets.batch(indices)
            return torch.stack([self._pixels(i) for i in indices]), self.targets.batch(indices)
        epochs = [key[0] if isinstance(key, tuple | list) else 0 for key in keys]
        if self.flips is not None and max(indices, default=0) < len(self.paths):
            batch = self._flipped_batch(indices, epochs)
            if batch is not None:
                return batch
        images, targets = zip(*(self._item(i, e) for i, e in zip(indices, epochs, strict=True)), strict=True)
        return torch.stack(images), self.targets.collate(targets)

    def _flipped_batch(self, indices: list[int], epochs: list[int]) -> tuple[torch.Tensor, Any] | None:
        """A batch of a flip-only pipeline, flipped in a few tensor ops; ``None`` when the task cannot move its targets.

        Each image draws one ``torch.rand(1)`` per step from a generator seeded
        like ``_item``'s, so the flips are exactly those torchvision would make.
        """
        assert self.runtime is not None and self.flips is not None
        generator = torch.Generator()
        draws = torch.empty((len(indices), len(self.flips)))
        for row, (index, epoch) in enumerate(zip(indices, epochs, strict=True)):
            generator.manual_seed(sample_seed(self.seed, epoch, self.ids[index]))
            for step in range(len(self.flips)):
                draws[row, step] = torch.rand(1, generator=generator)
        steps = [(axis, draws[:, step] < p) for step, (axis, p) in enumerate(self.flips)]
        targets = self.runtime.flip_targets([self.targets.item(i) for i in indices], steps, self.image_size)
        if targets is None:
            self.flips = None  # the task moves its targets image by image: do not ask again
            return None
        if self.cached is not None:
            images = self.cached.index_select(0, torch.as_tensor(indices, dtype=torch.int64))
        else:
            images = torch.stack([self._pixels(i) for i in indices])
        for axis, flipped in steps:
            if bool(flipped.any()):
                images[flipped] = images[flipped].flip(axis)
        return images, self.targets.collate(targets)


def collate_batch(batch: Any) -> Any:
    """``__getitems__`` already returns a batch (the only path the loaders take)."""
    return batch


def cache_bytes(num_images: int, image_size: Sequence[int], channels: int) -> int:
    return num_images * channels * int(image_size[0]) * int(image_size[1])


class ImageDataModule(L.LightningDataModule):
    """Train/val data of one split, as the config asks (size, channels, augmentations, cache, workers).

    ``runtime`` is the project task's (``TaskRuntime``): it says which images
    of a subset are annotated and what their targets are. ``dataset`` is a
    ``DatasetView`` (a plain ``dataset.json`` document is indexed first).
    """

    def __init__(self, images_dir: Path, dataset: Mapping[str, Any], config: ExperimentConfig, runtime: TaskRuntime,
                 pin_memory: bool = False, rank: int = 0, world: int = 1,
                 on_progress: Callable[[], None] | None = None) -> None:
        super().__init__()
        #: this process's DDP rank and the number of ranks: it loads only its own shard
        self.rank, self.world = rank, max(1, world)
        self.on_progress = on_progress
        self.images_dir = Path(images_dir)
        self.config = config
        self.runtime = runtime
        self.pin_memory = pin_memory
        dataset = as_view(dataset)
        self.class_names: list[str] = [str(c) for c in dataset.get("classes") or []]
        self.num_classes = len(self.class_names)
        self.mean, self.std = normalization(config.data.channels)
        split_index = config.split_index
        names = dataset.get("split_names") or []
        if split_index >= len(names):
            raise ValidationError(f"split_index {split_index} does not exist in the dataset", field="config.split_index")
        runtime.check_dataset(dataset)
        size = config.data.image_size
        self.train_items = runtime.samples(dataset, split_index, "train", size)
        self.val_items = runtime.samples(dataset, split_index, "val", size)
        split_name = names[split_index]
        if not self.train_items:
            raise ValidationError(f"split '{split_name}' has no labelled training images", field="config.split_index")
        if not self.val_items:
            raise ValidationError(f"split '{split_name}' has no labelled validation images", field="config.split_index")
        self.cache_used = False
        self.train_set: ImageDataset | None = None
        self.val_set: ImageDataset | None = None

    # -- facts the engine records ------------------------------------------------
    def train_targets(self) -> list[Any]:
        """Every training image's target (the whole subset, not this rank's shard)."""
        return [target for _, target in self.train_items]

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
        """Build this rank's train and val shards (decoding only those images when caching)."""
        if self.train_set is not None:
            return
        data = self.config.data
        size, channels, seed = data.image_size, data.channels, self.config.training.seed
        rank, world = self.rank, self.world
        train_ids = shard_positions(len(self.train_items), rank, world, seed)
        val_ids = list(range(rank, len(self.val_items), world))
        val_pad = math.ceil(len(self.val_items) / world) - len(val_ids)
        train_items = [self.train_items[i] for i in train_ids]
        val_items = [self.val_items[i] for i in val_ids]
        train_cache = val_cache = None
        if self.should_cache():
            train_cache = decode_all([self.images_dir / n for n, _ in train_items], size, channels,
                                     on_progress=self.on_progress)
            val_cache = decode_all([self.images_dir / n for n, _ in val_items], size, channels,
                                   on_progress=self.on_progress)
            self.cache_used = True
        train_tf = compose_augmentations(data.augmentations.train, size, "config.data.augmentations.train")
        val_tf = compose_augmentations(data.augmentations.val, size, "config.data.augmentations.val")
        runtime = self.runtime
        self.train_set = ImageDataset([n for n, _ in train_items], runtime.target_store([t for _, t in train_items]),
                                      self.images_dir, size, channels, train_tf, train_cache, seed=seed, ids=train_ids,
                                      runtime=runtime)
        self.val_set = ImageDataset([n for n, _ in val_items], runtime.target_store([t for _, t in val_items], val_pad),
                                    self.images_dir, size, channels, val_tf, val_cache, seed=mix_seed(VAL_STREAM, seed),
                                    ids=val_ids, runtime=runtime)

    def _loader_options(self) -> dict[str, Any]:
        workers = self.resolved_num_workers()
        return {"batch_size": self.config.data.batch_size, "num_workers": workers, "persistent_workers": workers > 0,
                "pin_memory": self.pin_memory, "collate_fn": collate_batch}

    def _check_rank(self) -> None:
        trainer = getattr(self, "trainer", None)
        if trainer is not None and (int(trainer.global_rank), int(trainer.world_size)) != (self.rank, self.world):
            raise RuntimeError(f"data sharded for rank {self.rank} of {self.world}, but the trainer is rank "
                               f"{trainer.global_rank} of {trainer.world_size}")

    def train_dataloader(self) -> ResumableLoader:
        """This rank's shard in an order fixed by (seed, epoch); Lightning saves and restores its position."""
        assert self.train_set is not None, "setup() must run first"
        self._check_rank()
        sampler = EpochSampler(len(self.train_set), mix_seed(self.config.training.seed, self.rank), shuffle=True)
        return ResumableLoader(self.train_set, sampler, **self._loader_options())

    def val_dataloader(self) -> DataLoader[Any]:
        """This rank's padded val shard, in order (the Trainer is told not to swap samplers)."""
        assert self.val_set is not None, "setup() must run first"
        self._check_rank()
        return DataLoader(self.val_set, shuffle=False, **self._loader_options())
