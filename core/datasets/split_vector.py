"""``assign`` on index columns: the same subsets for the same seed and ratios, without a tuple per image.

Grouping, ordering by filename (the index's name order) and cutting by
largest-remainder counts are numpy operations; only the shuffle of each
group's positions is ``random.Random(f"{seed}/{group}").shuffle``, the very
call ``splits.assign`` makes, so every existing split stays reproducible. For
a large group (``shuffle``) the same call is replayed from the generator's
state: the same Mersenne Twister outputs (numpy's ``MT19937`` seeded with
``random.Random``'s state), the same rejection sampling per draw, the same
swaps, found with array operations instead of a Python call per draw.
"""

from __future__ import annotations

import random

import numpy as np

from .document import SPLIT_VALUES, SUBSETS
from .splits import Ratios, largest_remainder

NONE_CODE = SPLIT_VALUES.index("none")


def assign_codes(label_codes: np.ndarray, rank: np.ndarray | None, classes: list[str], ratios: Ratios, seed: int,
                 stratified: bool = True, order: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """``SPLIT_VALUES`` codes per image (``int8``) and the warnings ``splits.assign`` gives for these labels.

    ``label_codes``: each image's class in ``classes`` (``-1``: unlabelled); ``rank``: its position in filename
    order, or instead ``order``: the positions in filename order (the index's ``order_filename``: nothing to sort).
    """
    codes = np.full(len(label_codes), NONE_CODE, dtype=np.int8)
    if order is not None:
        by_name = order[label_codes[order] >= 0].astype(np.int64)
    else:
        assert rank is not None
        labelled = np.flatnonzero(label_codes >= 0)
        by_name = labelled[np.argsort(rank[labelled], kind="stable")]
    if stratified:
        present = np.flatnonzero(np.bincount(label_codes[by_name], minlength=len(classes))).tolist()
        members_of = {classes[code]: by_name[label_codes[by_name] == code] for code in present}
    else:
        members_of = {"": by_name} if len(by_name) else {}
    weights = ratios.weights()
    warnings: list[str] = []
    for group in sorted(members_of):
        shuffled = shuffle(members_of[group], f"{seed}/{group}")
        counts = largest_remainder(len(shuffled), weights)
        bounds = np.cumsum([0, *counts])
        for value, (start, end) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
            codes[shuffled[start:end]] = value
        if stratified:
            empty = [value for value, weight, count in zip(SUBSETS, weights, counts, strict=False) if weight > 0 and count == 0]
            if empty:
                warnings.append(f"Class '{group}' has only {len(shuffled)} image(s), too few to stratify: "
                                f"no {'/'.join(empty)} image of this class")
    unlabelled = len(label_codes) - len(by_name)
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


#: below this many members a group is shuffled by ``random.Random.shuffle`` itself
_REPLAY_FROM = 4096
#: draws below this bound are taken one by one (the vectorised window would be narrow)
_SCALAR_BOUND = 1 << 12


def shuffle(members: np.ndarray, seed: str) -> np.ndarray:
    """``random.Random(seed).shuffle(members.tolist())`` as an ``int64`` array: the same order, faster for large groups."""
    if len(members) < _REPLAY_FROM:
        values = members.tolist()
        random.Random(seed).shuffle(values)
        return np.array(values, dtype=np.int64)
    return swapped(np.asarray(members, dtype=np.int64), shuffle_draws(random.Random(seed), len(members)))


def swapped(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``values`` after the swaps ``x[i], x[j] = x[j], x[i]`` for ``i = n - 1`` down to ``1`` with ``j = draws[n - 1 - i]``.

    Without a Python step per swap: step ``i`` fixes ``x[i]`` to what position
    ``j_i`` holds then, which is what the latest earlier step writing there
    (the smallest ``t > i`` with ``j_t = j_i``) put there, else the original.
    Step ``t`` puts there what position ``t`` held when it began: in turn
    what the latest step writing to ``t`` put there, else the original ``x[t]``;
    those chains are followed by pointer doubling.
    """
    count = len(values)
    target = np.zeros(count, dtype=np.int64)  # j of each step; step 0 (none) swaps 0 with itself
    target[1:] = draws[::-1]
    steps = np.arange(count, dtype=np.int64)
    order = np.argsort(target * count + steps)  # by position written, then by step
    by_target, by_step = target[order], steps[order]
    same = by_target[1:] == by_target[:-1]
    later = np.full(count, -1, dtype=np.int64)  # the next step writing where step i reads
    later[by_step[:-1][same]] = by_step[1:][same]
    moves = by_step != by_target
    move_target, move_step = by_target[moves], by_step[moves]
    first = np.ones(len(move_target), dtype=bool)
    first[1:] = move_target[1:] != move_target[:-1]
    source = steps.copy()  # where the value that position t holds at step t comes from
    source[move_target[first]] = move_step[first]
    while True:
        jumped = source[source]
        if np.array_equal(jumped, source):
            break
        source = jumped
    held = values[source]
    return np.where(later >= 0, held[np.maximum(later, 0)], values[target])


def shuffle_draws(rng: random.Random, count: int) -> np.ndarray:
    """The ``j`` that ``rng.shuffle`` of ``count`` items draws for ``i = count - 1`` down to ``1`` (``rng`` is not advanced).

    ``shuffle`` draws ``j = _randbelow(i + 1)``: with ``k = (i + 1).bit_length()``
    it takes the top ``k`` bits of the next 32-bit output until one is below
    ``i + 1``. The outputs come from numpy's ``MT19937`` given ``rng``'s state.
    Within a window of ``w`` outputs the bound only falls by one per accepted
    draw, so an output far below it is surely accepted and one at or above it
    surely rejected: those are decided at once; the rare output in between
    (within ``w`` of the bound) is decided alone, counting the draws accepted before it.
    """
    state = rng.getstate()[1]
    generator = np.random.MT19937()
    generator.state = {"bit_generator": "MT19937", "state": {"key": np.array(state[:624], dtype=np.uint32), "pos": state[624]}}
    outputs = generator.random_raw(2 * count + 1024).astype(np.int64)
    draws = np.empty(max(count - 1, 0), dtype=np.int64)
    done, used, i = 0, 0, count - 1  # draws made, outputs used, the i of the next draw
    while i >= 1:
        bound = i + 1
        bits = bound.bit_length()
        if used + 2 * bound + 1024 > len(outputs):
            outputs = np.concatenate([outputs, generator.random_raw(2 * bound + 1024).astype(np.int64)])
        if bound < _SCALAR_BOUND:  # the last few thousand draws, one at a time
            top = outputs[used : used + 4 * bound + 1024].tolist()
            spent = 0
            while i >= 1:
                bound = i + 1
                shift = 32 - bound.bit_length()
                drawn = top[spent] >> shift
                spent += 1
                while drawn >= bound:
                    drawn = top[spent] >> shift
                    spent += 1
                draws[done] = drawn
                done += 1
                i -= 1
            break
        block = bound - (1 << (bits - 1)) + 1  # draws left with this many bits
        width = max(64, (1 << bits) >> 8)
        window = outputs[used : used + width] >> (32 - bits)
        accept = window < bound - width + 1  # surely accepted: the bound falls by less than the window
        unsure = np.flatnonzero((window < bound) & ~accept).tolist()
        if unsure:  # decided one by one, knowing how many were accepted before each
            sure_before = np.cumsum(accept)
            extra = 0
            for position in unsure:
                accepted_before = extra + (int(sure_before[position - 1]) if position else 0)
                if int(window[position]) < bound - accepted_before:
                    accept[position] = True
                    extra += 1
        accepted = np.flatnonzero(accept)
        decided = len(window)
        if len(accepted) >= block:  # the block ends in this window: what follows draws with fewer bits
            accepted = accepted[:block]
            decided = int(accepted[-1]) + 1
        draws[done : done + len(accepted)] = window[accepted]
        done += len(accepted)
        i -= len(accepted)
        used += decided
    return draws
