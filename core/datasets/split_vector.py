"""``assign`` on index columns: the same subsets for the same seed and ratios, without a tuple per image.

Grouping, ordering by filename (the index's name order) and cutting by
largest-remainder counts are numpy operations; only the shuffle of each
group's positions is ``random.Random(f"{seed}/{group}").shuffle``, the very
call ``splits.assign`` makes, so every existing split stays reproducible.
"""

from __future__ import annotations

import random

import numpy as np

from .document import SPLIT_VALUES, SUBSETS
from .splits import Ratios, largest_remainder

NONE_CODE = SPLIT_VALUES.index("none")


def assign_codes(label_codes: np.ndarray, rank: np.ndarray, classes: list[str], ratios: Ratios, seed: int,
                 stratified: bool = True) -> tuple[np.ndarray, list[str]]:
    """``SPLIT_VALUES`` codes per image (``int8``) and the warnings ``splits.assign`` gives for these labels.

    ``label_codes``: each image's class in ``classes`` (``-1``: unlabelled); ``rank``: its position in filename order.
    """
    codes = np.full(len(label_codes), NONE_CODE, dtype=np.int8)
    labelled = np.flatnonzero(label_codes >= 0)
    by_name = labelled[np.argsort(rank[labelled], kind="stable")]
    if stratified:
        members_of = {classes[code]: by_name[label_codes[by_name] == code] for code in np.unique(label_codes[by_name]).tolist()}
    else:
        members_of = {"": by_name} if len(by_name) else {}
    weights = ratios.weights()
    warnings: list[str] = []
    for group in sorted(members_of):
        members = members_of[group].tolist()
        random.Random(f"{seed}/{group}").shuffle(members)
        shuffled = np.array(members, dtype=np.int64)
        counts = largest_remainder(len(members), weights)
        bounds = np.cumsum([0, *counts])
        for value, (start, end) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
            codes[shuffled[start:end]] = value
        if stratified:
            empty = [value for value, weight, count in zip(SUBSETS, weights, counts, strict=False) if weight > 0 and count == 0]
            if empty:
                warnings.append(f"Class '{group}' has only {len(members)} image(s), too few to stratify: "
                                f"no {'/'.join(empty)} image of this class")
    unlabelled = len(label_codes) - len(labelled)
    if unlabelled:
        warnings.append(f"{unlabelled} unlabelled image(s) get 'none'")
    return codes, warnings


def summary(codes: np.ndarray, label_codes: np.ndarray, classes: list[str], warnings: list[str]) -> dict[str, object]:
    """What ``split_service._summary`` answers, from codes: images per subset, per class per subset, warnings."""
    totals = np.bincount(codes.astype(np.int64), minlength=len(SPLIT_VALUES))
    labelled = label_codes >= 0
    joint = np.bincount(label_codes[labelled].astype(np.int64) * len(SPLIT_VALUES) + codes[labelled],
                        minlength=len(classes) * len(SPLIT_VALUES)).reshape(len(classes), len(SPLIT_VALUES))
    per_class = {classes[k]: {value: int(joint[k, v]) for v, value in enumerate(SPLIT_VALUES)}
                 for k in range(len(classes)) if joint[k].any()}
    return {"stats": {value: int(totals[v]) for v, value in enumerate(SPLIT_VALUES)},
            "per_class": dict(sorted(per_class.items())), "warnings": warnings}
