"""Vectorised split assignment (issue 19) equals the reference implementation for every seed, ratio and labelling."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.core.datasets.index import DatasetIndex
from modelyard.core.datasets.split_vector import assign_codes, summary
from modelyard.core.datasets.splits import Ratios, check_ratios
from modelyard.core.datasets.document import SPLIT_VALUES

from .reference_splits import assign as reference_assign

CLASSES = ["ant", "bee", "cat", "dog", "eel"]


def _index(names: list[str], labels: list[str | None]) -> DatasetIndex:
    images = [{"filename": name, "width": 8, "height": 8, "size": 10, "format": "png", "sha256": f"{i:064x}",
               "source_path": name, "split": [],
               "annotations": [] if label is None else [{"type": "label", "class_id": CLASSES.index(label),
                                                         "class_name": label}]}
              for i, (name, label) in enumerate(zip(names, labels, strict=True))]
    doc = {"version": 1, "task": "classification", "source": None, "classes": CLASSES, "split_names": [],
           "image_stats": {}, "images": images}
    return DatasetIndex.from_json(json.dumps(doc).encode())


ratios = st.tuples(st.floats(0.05, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(
    lambda r: (r[0] / max(1.0, sum(r)), r[1] / max(1.0, sum(r)), r[2] / max(1.0, sum(r))))
names = st.lists(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,12}", fullmatch=True), max_size=120, unique=True)


@settings(max_examples=300, deadline=None)
@given(names, st.data(), ratios, st.integers(0, 2**53), st.booleans())
def test_vectorised_assignment_equals_the_reference(names_: list[str], data: st.DataObject, shares: tuple[float, float, float],
                                                     seed: int, stratified: bool) -> None:
    labels = data.draw(st.lists(st.sampled_from([*CLASSES, None]), min_size=len(names_), max_size=len(names_)))
    ratio = check_ratios(*shares)
    index = _index(names_, labels)
    codes, warnings = assign_codes(index.class_codes, index.filename_rank(), index.classes, ratio, seed, stratified)
    expected = reference_assign(list(zip(names_, labels, strict=True)), ratio, seed, stratified)
    assert [SPLIT_VALUES[c] for c in codes.tolist()] == expected.subsets
    assert warnings == expected.warnings


def test_summary_counts_images_per_subset_and_class() -> None:
    index = _index([f"i{k}" for k in range(20)], [CLASSES[k % 2] if k % 5 else None for k in range(20)])
    codes, warnings = assign_codes(index.class_codes, index.filename_rank(), index.classes, Ratios(0.5, 0.5), 7)
    found = summary(codes, index.class_codes, index.classes, warnings)
    assert found["stats"]["none"] == 4 and sum(found["stats"].values()) == 20
    assert set(found["per_class"]) == {"ant", "bee"}
    assert sum(found["per_class"]["ant"].values()) == 8
