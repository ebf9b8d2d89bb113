"""Which images each step trains on, as a pure function of (seed, epoch): the basis of an exact resume.

A resumed run must see the rest of the interrupted epoch in the same order,
and the next epochs in the order the uninterrupted run would have used, with
the same augmentation of each image. So:

- ``EpochSampler`` draws epoch ``e``'s order from a generator seeded with
  ``(seed, e)`` only (never the global RNG) and can start part-way through it;
- it yields ``(epoch, index)`` keys, so the dataset can seed each image's
  augmentation from ``(seed, epoch, index)`` (``sample_seed``), in the main
  process or a worker alike;
- ``ResumableLoader`` counts the batches it handed out and exposes
  ``state_dict``/``load_state_dict``, which Lightning saves into every
  checkpoint and restores before iterating (``CombinedLoader._state_dicts``).

Under DDP every rank owns a fixed shard of the images (``shard_positions``), so
it decodes and caches only those; ranks get equal-length shards (padded by
repeating images, as ``DistributedSampler`` does) so all take the same number
of steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

_MASK64 = (1 << 64) - 1
#: Stream ids mixed into seeds, so train order, train augmentation and shard layout never share a stream.
ORDER_STREAM, AUGMENT_STREAM, SHARD_STREAM, VAL_STREAM = 1, 2, 3, 4


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 over each part): nearby inputs give unrelated seeds."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (int(part) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one image's augmentation in one epoch (independent of workers and the global RNG)."""
    return mix_seed(AUGMENT_STREAM, seed, epoch, index)


def shard_positions(length: int, rank: int, world: int, seed: int, pad: bool = True) -> list[int]:
    """The item positions rank ``rank`` of ``world`` owns, fixed for the whole run.

    ``world == 1``: every position in order. Otherwise every ``world``-th
    position of one seeded permutation (so classes spread evenly), and with
    ``pad`` the shard is topped up from the start of that permutation to
    ``ceil(length / world)``, so every rank takes the same number of steps.
    """
    if world <= 1:
        return list(range(length))
    generator = torch.Generator().manual_seed(mix_seed(SHARD_STREAM, seed))
    order = torch.randperm(length, generator=generator).tolist()
    if pad:
        per_rank = math.ceil(length / world)
        order = order + [order[i % length] for i in range(per_rank * world - length)] if length else order
    return order[rank::world]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` over ``range(length)`` in an order fixed by ``(seed, epoch)``; can start part-way.

    ``set_epoch`` (called by Lightning before each epoch) starts a new epoch at
    its beginning; ``resume_at`` sets the epoch and how many indices of it are
    already done. Nothing here reads the global RNG.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(mix_seed(ORDER_STREAM, self.seed, epoch))
        return torch.randperm(self.length, generator=generator).tolist()

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def resume_at(self, epoch: int, done: int) -> None:
        self.epoch, self.start = epoch, max(0, min(done, self.length))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        self.start = 0  # a later pass over the same epoch (not in training) starts at its beginning
        return iter([(epoch, index) for index in self.order(epoch)[start:]])

    def __len__(self) -> int:
        return self.length


class ResumableLoader(DataLoader[Any]):
    """A ``DataLoader`` over an ``EpochSampler`` whose position Lightning saves and restores with the checkpoint.

    ``len`` stays the full epoch's batch count (Lightning counts the batches a
    resumed epoch already did). The loader has its own generator, so creating
    an iterator never draws from the global RNG (which dropout uses).
    """

    def __init__(self, dataset: Any, sampler: EpochSampler, batch_size: int, **kwargs: Any) -> None:
        generator = torch.Generator().manual_seed(mix_seed(ORDER_STREAM, sampler.seed, -1))
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, generator=generator, **kwargs)
        self.epoch_sampler = sampler
        self._served = 0  # batches of the current epoch handed out so far

    def __iter__(self) -> Iterator[Any]:
        skipped = self.epoch_sampler.start // max(1, int(self.batch_size or 1))
        self._served = skipped
        return _Counting(super().__iter__(), self)

    def state_dict(self) -> dict[str, int]:
        """Plain ints: loads back with ``torch.load(weights_only=True)``."""
        return {"epoch": int(self.epoch_sampler.epoch), "batches": int(self._served)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the saved batch; a finished epoch continues at the start of the next one."""
        epoch, batches = int(state.get("epoch", 0)), int(state.get("batches", 0))
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self.epoch_sampler.resume_at(epoch, batches * int(self.batch_size or 1))
        self._served = batches


class _Counting(Iterator[Any]):
    """Counts the batches handed to the training loop (worker prefetching does not count)."""

    def __init__(self, inner: Iterator[Any], loader: ResumableLoader) -> None:
        self.inner = inner
        self.loader = loader

    def __next__(self) -> Any:
        batch = next(self.inner)
        self.loader._served += 1
        return batch

    def __iter__(self) -> _Counting:
        return self


def positions_of(keys: Sequence[Any]) -> list[int]:
    """The dataset positions of sampler keys (``(epoch, index)`` pairs or plain indices)."""
    return [key[1] if isinstance(key, tuple | list) else int(key) for key in keys]
