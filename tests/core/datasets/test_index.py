"""The in-memory index: every sort/filter/search combination equals the obvious computation, and it follows the file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.core.datasets.index import DatasetIndex, IndexCache
from modelyard.core.errors import CorruptDataError
from modelyard.core.jsonio import atomic_write_json

CLASSES = ["bird", "cat", "dog"]
SUBSETS = ["train", "val", "test", "none"]


def synthetic(n: int, seed: int = 0, splits: int = 2) -> dict:
    rng = random.Random(seed)
    images = []
    for i in range(n):
        label = rng.choice([*CLASSES, None])
        images.append({
            "filename": f"{rng.choice(['img', 'IMG', 'pic'])}_{i:05d}.png",
            "width": 16, "height": 16, "size": rng.randrange(100, 110), "format": "png", "sha256": f"{i:064x}",
            "source_path": f"x/{i}.png", "split": [rng.choice(SUBSETS) for _ in range(splits)],
            "annotations": [] if label is None else [{"type": "label", "class_id": CLASSES.index(label), "class_name": label}],
        })
    return {"version": 1, "task": "classification", "source": None, "classes": CLASSES,
            "split_names": [f"s{k}" for k in range(splits)], "image_stats": {}, "images": images}


def build(doc: dict) -> DatasetIndex:
    return DatasetIndex.from_json(json.dumps(doc).encode())


def naive(doc: dict, sort_by: str, descending: bool, filter_class, filter_split, search) -> list[str]:
    def label(image: dict) -> str | None:
        return image["annotations"][0]["class_name"] if image["annotations"] else None

    rows = [i for i in doc["images"]
            if (filter_class is None or label(i) == filter_class)
            and (filter_split is None or i["split"][filter_split[0]] == filter_split[1])
            and (not search or search.casefold() in i["filename"].casefold())]
    keys = {
        "filename": lambda i: i["filename"],
        "class": lambda i: (CLASSES.index(label(i)) if label(i) else len(CLASSES), i["filename"]),
        "size": lambda i: (i["size"], i["filename"]),
    }
    ordered = [i["filename"] for i in sorted(rows, key=keys[sort_by])]
    return ordered[::-1] if descending else ordered


DOC = synthetic(300, seed=5)
INDEX = build(DOC)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["filename", "class", "size"]),
    st.booleans(),
    st.sampled_from([None, "bird", "cat", "dog", "nope"]),
    st.one_of(st.none(), st.tuples(st.integers(0, 1), st.sampled_from(SUBSETS))),
    st.sampled_from([None, "", "img", "IMG_0", "pic_001", "zzz", "_00"]),
)
def test_every_sort_filter_and_search_combination_matches_the_obvious_result(sort_by, descending, filter_class,
                                                                              filter_split, search) -> None:
    selected = INDEX.select(sort_by, descending, filter_class, filter_split, search)
    assert [INDEX.images[i].filename for i in selected] == naive(DOC, sort_by, descending, filter_class, filter_split, search)


def test_class_counts_and_split_distribution_match_the_images() -> None:
    counts = INDEX.class_counts()
    assert sum(counts.values()) == sum(1 for i in DOC["images"] if i["annotations"])
    stats, per_class = INDEX.split_distribution(1)
    assert stats == {s: sum(1 for i in DOC["images"] if i["split"][1] == s) for s in SUBSETS}
    assert per_class["cat"]["val"] == sum(
        1 for i in DOC["images"] if i["split"][1] == "val" and i["annotations"] and i["annotations"][0]["class_name"] == "cat"
    )


def test_names_that_could_escape_the_images_folder_are_never_indexed() -> None:
    doc = synthetic(5)
    doc["images"][0]["filename"] = "../../project.json"
    doc["images"][1]["sha256"] = "../../x"
    doc["images"][2]["sha256"] = "a" * 64 + "\n" + "b" * 64
    doc["images"][3]["filename"] = doc["images"][4]["filename"]
    index = build(doc)
    assert list(index.by_name) == [doc["images"][3]["filename"]]


def test_cache_rebuilds_when_dataset_json_changes(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    cache = IndexCache()
    assert cache.get(path) is None
    atomic_write_json(path, synthetic(5))
    first = cache.get(path)
    assert first is not None and cache.get(path) is first
    atomic_write_json(path, synthetic(7))
    second = cache.get(path)
    assert second is not first and len(second) == 7
    path.unlink()
    assert cache.get(path) is None


def test_a_broken_dataset_json_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text('{"images": [{"filename": 3}]}', encoding="utf-8")
    with pytest.raises(CorruptDataError, match="dataset.json is corrupt"):
        IndexCache().get(path)


def test_missing_or_stale_image_stats_are_recomputed() -> None:
    doc = synthetic(4)
    doc["image_stats"] = {"num_images": 99}
    stats = build(doc).image_stats
    assert stats == {"num_images": 4, "min_width": 16, "max_width": 16, "min_height": 16, "max_height": 16, "formats": ["png"]}
