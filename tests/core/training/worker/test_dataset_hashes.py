"""The reproducibility hashes (engine.dataset_fingerprint, split_hash) read the index and equal the dict-path hashes.

Runs recorded before the index kept these hashes; a pipeline compares them
with new ones, so the columns must give the same digests (oracle:
tests/core/datasets/reference_samples.py, on the parsed ``dataset.json``).
"""

from __future__ import annotations

import json
import random

import pytest

from modelyard.core.datasets.view import DatasetView
from modelyard.core.training.worker.engine import dataset_fingerprint, split_hash
from tests.core.datasets import reference_samples as reference
from tests.core.datasets.documents import classification_document, complete, detection_document


def documents() -> list[dict]:
    duplicated = classification_document(seed=11, count=120)
    rng = random.Random(11)
    for image in rng.sample(duplicated["images"], 30):  # the same picture stored twice: pairs tie on the hash
        image["sha256"] = duplicated["images"][0]["sha256"]
    return [classification_document(seed=10), detection_document(seed=12), duplicated,
            complete({"classes": ["Zebra", "ant", "Ähre", "éclair", "\"quoted\""], "split_names": ["s"], "images": [
                {"filename": name, "annotations": [{"type": "label", "class_id": 0, "class_name": label}]}
                for name, label in [("b.png", "ant"), ("a.png", "Zebra"), ("ü.png", "Ähre"), ("c.png", "éclair"),
                                    ("d.png", "\"quoted\"")]]}),
            complete({"images": []})]


@pytest.mark.parametrize("doc", documents(), ids=["classification", "detection", "duplicates", "unicode", "empty"])
def test_the_fingerprint_and_split_hashes_equal_the_dict_paths(doc: dict) -> None:
    parsed, view = json.loads(json.dumps(doc)), DatasetView.from_document(doc)
    assert dataset_fingerprint(view) == reference.dataset_fingerprint(parsed)
    for split_index in range(len(parsed["split_names"]) + 2):
        assert split_hash(view, split_index) == reference.split_hash(parsed, split_index)


def test_the_fingerprint_follows_images_and_labels_not_names_or_order() -> None:
    doc = classification_document(seed=13, count=50)
    shuffled = {**doc, "images": [{**image, "filename": f"renamed_{k}.png"}
                                  for k, image in enumerate(reversed(doc["images"]))]}
    relabelled = json.loads(json.dumps(doc))
    relabelled["images"][0]["annotations"] = [{"type": "label", "class_id": 1, "class_name": "other"}]
    fingerprint = dataset_fingerprint(DatasetView.from_document(doc))
    assert dataset_fingerprint(DatasetView.from_document(shuffled)) == fingerprint
    assert dataset_fingerprint(DatasetView.from_document(relabelled)) != fingerprint
