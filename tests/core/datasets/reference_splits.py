"""The split assignment as it was before issue 19 (``splits.assign``, copied): the oracle the vectorised one must equal.

Existing splits were made by this code; ``split_vector.assign_codes`` must
give the same subsets for the same seed and ratios, so they stay reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from modelyard.core.datasets.document import NONE, SPLIT_VALUES, SUBSETS
from modelyard.core.datasets.splits import Assignment, Ratios, largest_remainder


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
