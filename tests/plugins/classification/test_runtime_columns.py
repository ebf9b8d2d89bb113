"""Classification reads a subset's labels from the index's columns, exactly as the dict-per-image reading did.

The oracle is the code it replaced (tests/core/datasets/reference_samples.py),
run on the parsed ``dataset.json``; the runtime reads the ``DatasetView`` of the same file.
"""

from __future__ import annotations

import json
import random

import pytest

from modelyard.core.datasets.document import split_items
from modelyard.core.datasets.view import DatasetView
from modelyard.core.errors import CorruptDataError
from modelyard.plugins.classification import CLASSIFICATION
from modelyard.plugins.classification.runtime import ClassificationRuntime
from tests.core.datasets import reference_samples as reference
from tests.core.datasets.documents import SPLIT_VALUES, classification_document

RUNTIME = ClassificationRuntime(CLASSIFICATION)
SEEDS = range(6)


def views(seed: int, broken: dict | None = None) -> tuple[dict, DatasetView]:
    """The parsed document (the oracle's input) and the view of the same file."""
    doc = classification_document(seed)
    if broken is not None:
        rng = random.Random(seed)
        for image in rng.sample(doc["images"], 3):
            image["annotations"] = [broken, *image["annotations"]]
    return json.loads(json.dumps(doc)), DatasetView.from_document(doc)


@pytest.mark.parametrize("seed", SEEDS)
def test_samples_equal_the_dict_readings_for_every_split_and_subset(seed: int) -> None:
    doc, view = views(seed)
    for split_index in range(len(doc["split_names"]) + 1):  # one past the names: every list is too short
        for subset in SPLIT_VALUES:
            expected = reference.split_items(doc, split_index, subset)
            assert RUNTIME.samples(view, split_index, subset, (8, 8)) == expected
            assert split_items(view, split_index, subset) == expected
    assert any(RUNTIME.samples(view, 0, "train", (8, 8)))


@pytest.mark.parametrize("seed", SEEDS)
def test_evaluation_samples_equal_the_dict_readings_whatever_classes_the_model_knows(seed: int) -> None:
    doc, view = views(seed)
    for model_classes in (doc["classes"], doc["classes"][::-1], doc["classes"][1:], ["other", doc["classes"][0]], []):
        for subset in ("train", "val", "test", "holdout"):
            assert RUNTIME.evaluation_samples(view, 0, subset, (8, 8), model_classes) == \
                reference.classification_evaluation_samples(doc, 0, subset, model_classes)


@pytest.mark.parametrize("broken", [{"type": "label", "class_id": 7}, {"type": "label", "class_id": -1},
                                    {"type": "label"}, {"type": "label", "class_id": None, "class_name": "bird"}],
                         ids=["past-the-classes", "negative", "missing", "null"])
@pytest.mark.parametrize("seed", SEEDS[:3])
def test_an_invalid_class_id_is_the_same_error_on_the_same_image(seed: int, broken: dict) -> None:
    doc, view = views(seed, broken)
    raised = 0
    for subset in SPLIT_VALUES:
        try:
            expected = reference.split_items(doc, 0, subset)
        except CorruptDataError as error:
            raised += 1
            with pytest.raises(CorruptDataError) as found:
                RUNTIME.samples(view, 0, subset, (8, 8))
            assert found.value.message == error.message
        else:
            assert RUNTIME.samples(view, 0, subset, (8, 8)) == expected
    assert raised


def test_a_plain_document_is_read_through_its_view() -> None:
    doc, view = views(0)
    assert RUNTIME.samples(doc, 0, "val", (8, 8)) == RUNTIME.samples(view, 0, "val", (8, 8))
