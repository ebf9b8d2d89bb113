"""Split assignment: pure functions, deterministic for a dataset and a seed.

Images are grouped by class (or kept in one group when not stratified),
each group is sorted by filename and shuffled with a generator seeded by the
seed and the group's name, then cut by exact largest-remainder counts, so
every subset of every class is within one image of its ratio. Unlabelled
images get ``"none"``. A class with images gets at least one training image.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ValidationError
from .document import NONE, SPLIT_VALUES, SUBSETS

RATIO_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Ratios:
    train: float
    val: float = 0.0
    test: float = 0.0

    @property
    def none(self) -> float:
        """The share left over when the ratios sum to less than 1 (those images get ``"none"``)."""
        rest = 1.0 - (self.train + self.val + self.test)
        return rest if rest > RATIO_TOLERANCE else 0.0

    def weights(self) -> list[float]:
        """Weights in ``SPLIT_VALUES`` order: train, val, test, none."""
        return [self.train, self.val, self.test, self.none]


@dataclass(frozen=True)
class Assignment:
    subsets: list[str]
    """One of ``SPLIT_VALUES`` per input item, in input order."""
    warnings: list[str]


def check_ratios(train: float, val: float = 0.0, test: float = 0.0) -> Ratios:
    """Validated ratios: each from 0 to 1, train > 0, sum at most 1 (within ``RATIO_TOLERANCE``)."""
    for field, value in (("train", train), ("val", val), ("test", test)):
        if not math.isfinite(value) or value < 0 or value > 1:
            raise ValidationError(f"ratios.{field} must be a number from 0 to 1 (got {value})", field=f"ratios.{field}")
    if train <= 0:
        raise ValidationError("ratios.train must be greater than 0", field="ratios.train")
    total = train + val + test
    if total > 1 + RATIO_TOLERANCE:
        raise ValidationError(f"ratios must sum to at most 1 (got {total:g})", field="ratios")
    return Ratios(train=train, val=val, test=test)


def largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Integer counts summing to ``total`` with each within one of ``total * weight`` (Hamilton's method).

    Ties in the remainders go to the earlier weight, so the result is deterministic.
    """
    weight_sum = sum(weights)
    quotas = [total * w / weight_sum for w in weights] if weight_sum > 0 else [0.0] * len(weights)
    counts = [math.floor(q) for q in quotas]
    left = total - sum(counts)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[:left]:
        counts[i] += 1
    if total > 0 and counts[0] == 0 and weights[0] > 0:
        _give_train_one(counts, quotas)
    return counts


def _give_train_one(counts: list[int], quotas: list[float]) -> None:
    """Move one item to train from the subset that was rounded up the least; keeps every count within one of its quota."""
    rounded_up = [i for i in range(1, len(counts)) if counts[i] > quotas[i]]
    if rounded_up:
        donor = min(rounded_up, key=lambda i: (quotas[i] - math.floor(quotas[i]), i))
        counts[donor] -= 1
        counts[0] += 1


def assign(items: Sequence[tuple[str, str | None]], ratios: Ratios, seed: int, stratified: bool = True) -> Assignment:
    """Assign every ``(filename, class_name)`` to train/val/test/none; see the module docstring."""
    groups: dict[str, list[int]] = {}
    for position, (_filename, label) in enumerate(items):
        if label is not None:
            groups.setdefault(label if stratified else "", []).append(position)
    subsets = [NONE] * len(items)
    weights = ratios.weights()
    warnings: list[str] = []
    for group in sorted(groups):
        members = sorted(groups[group], key=lambda position: items[position][0])
        random.Random(f"{seed}/{group}").shuffle(members)
        counts = largest_remainder(len(members), weights)
        start = 0
        for value, count in zip(SPLIT_VALUES, counts, strict=True):
            for position in members[start : start + count]:
                subsets[position] = value
            start += count
        if stratified:
            empty = [value for value, weight, count in zip(SUBSETS, weights, counts, strict=False) if weight > 0 and count == 0]
            if empty:
                warnings.append(
                    f"Class '{group}' has only {len(members)} image(s), too few to stratify: "
                    f"no {'/'.join(empty)} image of this class"
                )
    unlabelled = len(items) - sum(len(members) for members in groups.values())
    if unlabelled:
        warnings.append(f"{unlabelled} unlabelled image(s) get 'none'")
    return Assignment(subsets=subsets, warnings=warnings)
