"""Split assignment: pure functions, deterministic for a dataset and a seed.

Images are grouped by class (or kept in one group when not stratified),
each group is sorted by filename and shuffled with a generator seeded by the
seed and the group's name, then cut by exact largest-remainder counts, so
every subset of every class is within one image of its ratio. Unlabelled
images get ``"none"``. A class with images gets at least one training image.

Multi-label data (detection: an image holds the classes of its boxes) goes
through ``assign_multilabel``, iterative stratification (Sechidis, Tsoumakas
and Vlahavas, 2011): the class with the fewest images still unassigned is
placed first, each of its images into the subset that still wants the most
images of that class (ties: the subset that wants the most images overall,
then train, val, test, none), and every class of the placed image counts
towards its subset. Images without boxes (background) then fill the subsets
that still want images overall. The order of images is their filenames
shuffled by a generator seeded with the seed, so the result depends only on
the dataset and the seed. A class whose images all went elsewhere gets one
moved into train.
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


def assign_multilabel(
    items: Sequence[tuple[str, frozenset[str]]], ratios: Ratios, seed: int, stratified: bool = True
) -> Assignment:
    """Assign every ``(filename, classes of the image)`` to train/val/test/none; see the module docstring.

    Every image is assigned (an empty class set is a background image, not an
    unlabelled one). Not stratified, it is ``assign`` with all images in one group.
    """
    if not stratified:
        return assign([(filename, "") for filename, _ in items], ratios, seed, stratified=False)
    weights = ratios.weights()
    usable = [k for k, weight in enumerate(weights) if weight > 0]
    order = sorted(range(len(items)), key=lambda position: items[position][0])
    random.Random(f"{seed}/multilabel").shuffle(order)
    wanted_total = largest_remainder(len(items), weights)
    images_of: dict[str, list[int]] = {}
    for position in order:
        for name in items[position][1]:
            images_of.setdefault(name, []).append(position)
    wanted = {name: largest_remainder(len(members), weights) for name, members in images_of.items()}
    remaining = {name: len(members) for name, members in images_of.items()}
    codes: list[int | None] = [None] * len(items)

    def place(position: int, code: int) -> None:
        codes[position] = code
        wanted_total[code] -= 1
        for name in items[position][1]:
            wanted[name][code] -= 1
            remaining[name] -= 1

    while any(remaining.values()):
        name = min((n for n, left in remaining.items() if left), key=lambda n: (remaining[n], n))
        for position in images_of[name]:
            if codes[position] is None:
                place(position, max(usable, key=lambda k: (wanted[name][k], wanted_total[k], -k)))
    for position in order:
        if codes[position] is None:
            place(position, max(usable, key=lambda k: (wanted_total[k], -k)))
    _ensure_train(codes, images_of, weights)
    subsets = [SPLIT_VALUES[code] for code in codes]  # type: ignore[index]
    return Assignment(subsets=subsets, warnings=_multilabel_warnings(subsets, images_of, weights))


def _ensure_train(codes: list[int | None], images_of: dict[str, list[int]], weights: list[float]) -> None:
    """Move one image into train for each class that has images but none there (rare: its images went with rarer classes)."""
    if weights[0] <= 0:
        return
    for name in sorted(images_of):
        members = images_of[name]
        if members and all(codes[position] != 0 for position in members):
            codes[members[0]] = 0


def _multilabel_warnings(subsets: list[str], images_of: dict[str, list[int]], weights: list[float]) -> list[str]:
    warnings = []
    for name in sorted(images_of):
        members = images_of[name]
        present = {subsets[position] for position in members}
        empty = [value for value, weight in zip(SUBSETS, weights, strict=False) if weight > 0 and value not in present]
        if empty:
            warnings.append(
                f"Class '{name}' is in only {len(members)} image(s), too few to stratify: "
                f"no {'/'.join(empty)} image with this class"
            )
    return warnings
