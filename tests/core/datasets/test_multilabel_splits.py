"""Multi-label (detection) splits: every image assigned, deterministic for a seed, stratified by the classes present."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.core.datasets.boxes import BadBox, clean_boxes
from modelyard.core.datasets.splits import assign_multilabel, check_ratios
from modelyard.core.plugin_types import BoxLabel

CLASSES = ["bike", "car", "dog", "eel", "fox"]


@st.composite
def detection_sets(draw: st.DrawFn) -> list[tuple[str, frozenset[str]]]:
    count = draw(st.integers(0, 60))
    sets = draw(st.lists(st.frozensets(st.sampled_from(CLASSES), max_size=3), min_size=count, max_size=count))
    return draw(st.permutations([(f"img_{i:03d}.png", found) for i, found in enumerate(sets)]))


@settings(max_examples=150, deadline=None)
@given(detection_sets(), st.integers(0, 2**32), st.randoms())
def test_every_image_is_assigned_deterministically_whatever_the_input_order(items, seed, rnd) -> None:
    ratios = check_ratios(0.7, 0.2, 0.1)
    first = dict(zip((n for n, _ in items), assign_multilabel(items, ratios, seed).subsets))
    assert set(first.values()) <= {"train", "val", "test"}  # background images too: none is only the leftover share
    shuffled = list(items)
    rnd.shuffle(shuffled)
    assert dict(zip((n for n, _ in shuffled), assign_multilabel(shuffled, ratios, seed).subsets)) == first


@settings(max_examples=150, deadline=None)
@given(detection_sets(), st.integers(0, 2**32))
def test_each_class_with_images_is_in_train(items, seed) -> None:
    result = assign_multilabel(items, check_ratios(0.6, 0.2, 0.2), seed)
    for name in CLASSES:
        subsets = [s for (_, found), s in zip(items, result.subsets) if name in found]
        assert not subsets or "train" in subsets


def test_classes_are_balanced_across_subsets_on_a_realistic_set() -> None:
    rng = random.Random(3)
    weights = [50, 30, 10, 6, 4]
    items = []
    for i in range(1000):
        found = frozenset(rng.choices(CLASSES, weights, k=rng.randint(0, 3)))
        items.append((f"{i:04d}.png", found))
    result = assign_multilabel(items, check_ratios(0.8, 0.1, 0.1), seed=7)
    totals = Counter(result.subsets)
    assert abs(totals["train"] - 800) <= 10 and abs(totals["val"] - 100) <= 10 and abs(totals["test"] - 100) <= 10
    for name in CLASSES:
        per_subset = Counter(s for (_, found), s in zip(items, result.subsets) if name in found)
        count = sum(per_subset.values())
        for subset, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
            assert abs(per_subset[subset] - share * count) <= max(3, 0.05 * count), (name, per_subset)
    assert result.warnings == []
    assert assign_multilabel(items, check_ratios(0.8, 0.1, 0.1), seed=8).subsets != result.subsets


def test_a_rare_class_gets_a_warning_and_a_train_image() -> None:
    items = [(f"{i}.png", frozenset({"car"})) for i in range(20)] + [("rare.png", frozenset({"car", "eel"}))]
    result = assign_multilabel(items, check_ratios(0.8, 0.1, 0.1), seed=1)
    assert result.subsets[-1] == "train"
    assert result.warnings == ["Class 'eel' is in only 1 image(s), too few to stratify: no val/test image with this class"]


def test_leftover_share_goes_to_none_and_unstratified_is_one_group() -> None:
    items = [(f"{i}.png", frozenset({"car"} if i % 2 else set())) for i in range(10)]
    assert Counter(assign_multilabel(items, check_ratios(0.5, 0.0, 0.0), seed=1).subsets) == {"train": 5, "none": 5}
    assert Counter(assign_multilabel(items, check_ratios(0.5, 0.5), seed=1, stratified=False).subsets) == {
        "train": 5, "val": 5}


def test_boxes_are_clipped_counted_and_degenerate_ones_refused() -> None:
    clean = clean_boxes([BoxLabel("car", (-2, 3, 10, 4)), BoxLabel("car", (1, 1, 2.00049, 2))], 8, 6)
    assert clean.boxes == [("car", [0.0, 3.0, 8.0, 3.0]), ("car", [1.0, 1.0, 2.0, 2.0])] and clean.clipped == 1
    for bad, reason in (((1, 1, 0, 2), "degenerate"), ((1, 1, 0.0001, 2), "degenerate"), ((9, 1, 2, 2), "degenerate"),
                        ((float("nan"), 1, 2, 2), "non-finite"), ((1, 1, float("inf"), 2), "non-finite"),
                        ((10**400, 1, 2, 2), "too large"), ((1, 1, 2), "4 numbers"), ((1, "1", 2, 2), "not a number"),
                        ((True, 1, 2, 2), "not a number")):
        try:
            clean_boxes([BoxLabel("car", bad)], 8, 6)  # type: ignore[arg-type]
        except BadBox as exc:
            assert reason in str(exc), (bad, str(exc))
        else:
            raise AssertionError(f"{bad} was accepted")
