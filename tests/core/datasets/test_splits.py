"""Split assignment: deterministic, disjoint, covering, and exact per class."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.core.datasets.splits import Ratios, assign, check_ratios, largest_remainder
from modelyard.core.errors import ValidationError

SUBSETS = ("train", "val", "test", "none")


@st.composite
def datasets(draw: st.DrawFn) -> list[tuple[str, str | None]]:
    """Unique filenames, each with one of a few class labels or none."""
    classes = draw(st.lists(st.sampled_from(["cat", "dog", "eel", "fox", "gnu"]), min_size=1, max_size=5, unique=True))
    counts = draw(st.lists(st.integers(0, 40), min_size=len(classes), max_size=len(classes)))
    unlabelled = draw(st.integers(0, 5))
    items: list[tuple[str, str | None]] = [(f"{c}_{i:03d}.png", c) for c, n in zip(classes, counts) for i in range(n)]
    items += [(f"u_{i}.png", None) for i in range(unlabelled)]
    return draw(st.permutations(items))


@st.composite
def ratios(draw: st.DrawFn) -> Ratios:
    train = draw(st.floats(0.05, 1.0))
    val = draw(st.floats(0.0, 1.0 - train))
    test = draw(st.floats(0.0, 1.0 - train - val))
    if draw(st.booleans()):  # most requests sum to exactly 1
        test = max(0.0, 1.0 - train - val)
    return check_ratios(train, val, test)


@settings(max_examples=150, deadline=None)
@given(datasets(), ratios(), st.integers(0, 2**32), st.booleans())
def test_subsets_are_disjoint_and_cover_every_labelled_image(items, split_ratios, seed, stratified) -> None:
    result = assign(items, split_ratios, seed, stratified)
    assert len(result.subsets) == len(items)  # exactly one subset per image: disjoint by construction
    for (_name, label), subset in zip(items, result.subsets):
        assert subset in SUBSETS
        if label is None:
            assert subset == "none"
        elif split_ratios.none == 0:
            assert subset != "none"


@settings(max_examples=100, deadline=None)
@given(datasets(), ratios(), st.integers(0, 2**32), st.booleans(), st.randoms())
def test_same_seed_gives_same_assignment_whatever_the_input_order(items, split_ratios, seed, stratified, rnd) -> None:
    first = dict(zip((n for n, _ in items), assign(items, split_ratios, seed, stratified).subsets))
    shuffled = list(items)
    rnd.shuffle(shuffled)
    second = dict(zip((n for n, _ in shuffled), assign(shuffled, split_ratios, seed, stratified).subsets))
    assert first == second


@settings(max_examples=150, deadline=None)
@given(datasets(), ratios(), st.integers(0, 2**32))
def test_per_class_proportions_are_within_one_image_of_the_ratios(items, split_ratios, seed) -> None:
    result = assign(items, split_ratios, seed, stratified=True)
    per_class: dict[str, Counter[str]] = {}
    for (_name, label), subset in zip(items, result.subsets):
        if label is not None:
            per_class.setdefault(label, Counter())[subset] += 1
    for label, counts in per_class.items():
        n = sum(counts.values())
        for subset, ratio in zip(SUBSETS, split_ratios.weights()):
            assert abs(counts[subset] - n * ratio) < 1 + 1e-9, (label, subset, counts, n, split_ratios)
        assert counts["train"] >= 1


def test_different_seeds_give_different_assignments() -> None:
    items = [(f"{i:03d}.png", "cat") for i in range(100)]
    ratios_ = check_ratios(0.5, 0.5)
    assert assign(items, ratios_, 1).subsets != assign(items, ratios_, 2).subsets


def test_largest_remainder_is_exact_and_sums_to_total() -> None:
    assert largest_remainder(10, [0.8, 0.1, 0.1, 0.0]) == [8, 1, 1, 0]
    assert largest_remainder(7, [0.7, 0.15, 0.15, 0.0]) == [5, 1, 1, 0]  # 4.9, 1.05, 1.05 -> train takes the remainder
    assert largest_remainder(1, [0.1, 0.45, 0.45, 0.0]) == [1, 0, 0, 0]  # a lone image goes to train


def test_classes_too_small_to_stratify_give_warnings_not_errors() -> None:
    items = [("big_%d" % i, "big") for i in range(10)] + [("tiny", "tiny"), ("u", None)]
    result = assign(items, check_ratios(0.8, 0.1, 0.1), seed=0)
    assert dict(zip((n for n, _ in items), result.subsets))["tiny"] == "train"
    assert result.warnings == [
        "Class 'tiny' has only 1 image(s), too few to stratify: no val/test image of this class",
        "1 unlabelled image(s) get 'none'",
    ]


def test_ratios_below_one_leave_the_rest_as_none() -> None:
    items = [(f"{i}", "cat") for i in range(10)]
    counts = Counter(assign(items, check_ratios(0.5, 0.2, 0.1), seed=3).subsets)
    assert counts == {"train": 5, "val": 2, "test": 1, "none": 2}


@pytest.mark.parametrize(("train", "val", "test", "field"), [
    (0.0, 0.5, 0.5, "ratios.train"),
    (0.8, -0.1, 0.3, "ratios.val"),
    (0.8, 0.2, float("nan"), "ratios.test"),
    (0.8, 0.2, 0.1, "ratios"),
])
def test_invalid_ratios_are_rejected_naming_the_field(train: float, val: float, test: float, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_ratios(train, val, test)
    assert caught.value.field == field


def test_ratios_summing_to_one_within_tolerance_are_accepted() -> None:
    assert check_ratios(0.7, 0.2, 0.1 + 5e-7).none == 0.0
