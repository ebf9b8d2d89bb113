"""What a streamed import asks of the index: duplicates by hash, names ignoring case, class ids, and the joined index.

``appended`` must give, column by column, the index a fresh build reads from the
file with the new images after the old ones, whatever the two hold: new
formats, split values, subsets, annotation types and class names (their codes
re-numbered into the old tables), detection boxes on either side or neither,
an empty old file, and new images a fresh build would drop.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import pytest

from modelyard.core.datasets.document import image_stats
from modelyard.core.datasets.index import DatasetIndex
from modelyard.core.jsonio import encode_pretty

NAMES = ["cat", "dog", "éléphant", "日本"]


def assert_same_index(found: DatasetIndex, expected: DatasetIndex) -> None:
    """Every column (name, dtype, shape, values) and the metadata equal."""
    assert list(found.arrays) == list(expected.arrays)
    for name, column in expected.arrays.items():
        assert found.arrays[name].dtype == column.dtype, name
        assert found.arrays[name].shape == column.shape, name
        assert np.array_equal(found.arrays[name], column, equal_nan=column.dtype.kind == "f"), name
    assert found.meta == expected.meta


def _image(i: int, rng: random.Random, task: str, values: list[str], formats: list[str]) -> dict[str, Any]:
    image: dict[str, Any] = {
        "filename": f"{rng.choice(['img', 'IMG', 'Bild_ä', '写真'])}_{i:04d}.{rng.choice(['jpg', 'png'])}",
        "width": rng.randrange(8, 4000), "height": rng.randrange(8, 3000), "size": rng.randrange(100, 10**7),
        "format": rng.choice(formats), "sha256": f"{rng.getrandbits(256):064x}", "source_path": f"sub/{i}.jpg",
        "split": [rng.choice(values) for _ in range(rng.randrange(0, 3))],
    }
    if rng.random() < 0.3:
        image["source_subset"] = rng.choice(["train", "val", "test"])
    if task == "classification":
        name = rng.choice([*NAMES, None])
        image["annotations"] = [] if name is None else [{"type": "label", "class_id": NAMES.index(name), "class_name": name}]
    else:
        image["annotations"] = [
            {"type": "bbox", "class_id": NAMES.index(name), "class_name": name,
             "bbox": [rng.uniform(0, 100), rng.choice([0.0, 1e-7, 12.5]), rng.uniform(1, 50), 3.0]}
            for name in rng.choices(NAMES, k=rng.randrange(0, 3))
        ]
    return image


def _files(task: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[bytes, bytes, dict[str, Any]]:
    """The old file, the new one (the new images appended), and the new header."""
    def document(images: list[dict[str, Any]]) -> dict[str, Any]:
        return {"version": 1, "task": task, "source": {"kind": "local", "format": "imagefolder", "imported_at": "t"},
                "classes": sorted(NAMES), "split_names": ["a", "b"], "image_stats": image_stats(images), "images": images}

    after = document(old + new)
    return encode_pretty(document(old)) + b"\n", encode_pretty(after) + b"\n", after


@pytest.mark.parametrize("task", ["classification", "object_detection"])
@pytest.mark.parametrize(("old_count", "new_count"), [(0, 5), (1, 1), (200, 40), (50, 1)])
def test_appended_equals_a_fresh_build_of_the_appended_file(task: str, old_count: int, new_count: int) -> None:
    rng = random.Random(old_count * 7 + new_count)
    old = [_image(i, rng, task, ["train", "none"], ["jpeg"]) for i in range(old_count)]
    # the new images bring values the old tables lack: a format, split values, a subset, classes on labels/boxes
    new = [_image(old_count + i, rng, task, ["val", "test", "none", "odd"], ["png", "jpeg", "webp"])
           for i in range(new_count)]
    before, after, header = _files(task, old, new)
    index = DatasetIndex.from_json(before)
    joined = index.appended(encode_pretty(new), header)
    assert_same_index(joined, DatasetIndex.from_json(after))
    assert joined.whole_file() and index.whole_file()


def test_appended_joins_box_columns_when_only_one_side_has_boxes() -> None:
    rng = random.Random(3)
    plain = [_image(i, rng, "object_detection", ["none"], ["png"]) for i in range(20)]
    for image in plain:
        image["annotations"] = []
    boxed = [_image(20 + i, rng, "object_detection", ["none"], ["png"]) for i in range(20)]
    boxed[0]["annotations"] = [{"type": "bbox", "class_id": 0, "class_name": "cat", "bbox": [1.0, 2.0, 3.0, 4.0]}]
    for old, new in ((plain, boxed), (boxed, plain), (plain, plain)):
        before, after, header = _files("object_detection", old, new)
        assert_same_index(DatasetIndex.from_json(before).appended(encode_pretty(new), header), DatasetIndex.from_json(after))


@pytest.mark.parametrize("bad", ["../escape.png", "taken", ".hidden.png", "twice"])
def test_appended_drops_what_a_fresh_build_drops(bad: str) -> None:
    rng = random.Random(5)
    old = [_image(i, rng, "classification", ["train"], ["png"]) for i in range(30)]
    new = [_image(30 + i, rng, "classification", ["train"], ["png"]) for i in range(5)]
    new[2]["filename"] = {"taken": old[4]["filename"], "twice": new[1]["filename"]}.get(bad, bad)
    before, after, header = _files("classification", old, new)
    joined = DatasetIndex.from_json(before).appended(encode_pretty(new), header)
    assert_same_index(joined, DatasetIndex.from_json(after))
    assert len(joined) == 34 and not joined.whole_file()


def test_appended_needs_the_index_of_every_image_of_the_file() -> None:
    rng = random.Random(6)
    old = [_image(i, rng, "classification", ["train"], ["png"]) for i in range(3)]
    old[0]["filename"] = "../x.png"
    before, _, header = _files("classification", old, [])
    with pytest.raises(ValueError, match="every image"):
        DatasetIndex.from_json(before).appended(b"[]", header)


def test_owners_of_names_the_last_image_of_each_hash_held() -> None:
    rng = random.Random(7)
    images = [_image(i, rng, "classification", ["train"], ["png"]) for i in range(1000)]
    images[900]["sha256"] = images[10]["sha256"]  # a hand-edited file may repeat a hash: the last image wins
    _, after, _ = _files("classification", images, [])
    index = DatasetIndex.from_json(after)
    asked = [images[10]["sha256"], images[500]["sha256"], "0" * 64, "not a hash", images[999]["sha256"].upper()]
    assert index.owners_of(asked) == {images[10]["sha256"]: images[900]["filename"],
                                      images[500]["sha256"]: images[500]["filename"]}
    assert index.owners_of([]) == {} and DatasetIndex.empty("classification").owners_of(asked) == {}


def test_casefolded_names_fold_ascii_and_unicode_names_as_str_casefold_does() -> None:
    rng = random.Random(8)
    images = [_image(i, rng, "classification", ["train"], ["png"]) for i in range(300)]
    images[0]["filename"] = "Straße_ÄÖ.png"
    images[1]["filename"] = "\u212a_kelvin.png"  # KELVIN SIGN folds to an ASCII k
    _, after, _ = _files("classification", images, [])
    assert DatasetIndex.from_json(after).casefolded_names() == {image["filename"].casefold().encode() for image in images}
    assert DatasetIndex.empty("classification").casefolded_names() == set()


def test_class_ids_agree_when_relabelling_to_the_classes_would_change_no_image() -> None:
    rng = random.Random(9)
    images = [_image(i, rng, "classification", ["train"], ["png"]) for i in range(100)]
    images[0]["annotations"] = [{"type": "label", "class_id": 0, "class_name": "zzz"}]  # a name outside classes
    images[1]["annotations"] = [{"type": "note", "class_id": 5, "class_name": "cat"}]  # not a class annotation
    _, after, _ = _files("classification", images, [])
    index = DatasetIndex.from_json(after)
    classes = sorted(NAMES)
    assert index.class_ids_agree(classes)
    assert index.class_ids_agree([*classes, "zzzz"])  # a class sorting last renumbers nothing
    assert not index.class_ids_agree(["aardvark", *classes])  # one sorting first renumbers every image
    assert not index.class_ids_agree([*classes, "zzz"])  # image 0's label would get id 4
    wrong = copy.deepcopy(images)
    wrong[5]["annotations"] = [{"type": "label", "class_name": "cat"}]  # no class_id: relabel would add one
    assert not DatasetIndex.from_json(_files("classification", wrong, [])[1]).class_ids_agree(classes)
