"""The classification runtime (plugins/classification/runtime.py): labels, evaluation samples, prediction output."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.plugins.classification import CLASSIFICATION
from modelyard.plugins.classification.runtime import PAD_LABEL, ClassificationRuntime
from tests.core.datasets.documents import view_of

RUNTIME = ClassificationRuntime(CLASSIFICATION)


def _image(name: str, subset: str, label: str | None, classes: list[str]) -> dict:
    annotations = [] if label is None else [{"type": "label", "class_id": classes.index(label), "class_name": label}]
    return {"filename": name, "split": [subset], "annotations": annotations}


def test_labels_batch_as_one_tensor_with_padding_marked() -> None:
    store = RUNTIME.target_store([2, 0, 1], pad=1)
    assert store.batch([3, 0]).tolist() == [PAD_LABEL, 2] and len(store) == 4


def test_evaluation_maps_labels_to_the_models_classes_by_name_and_skips_unknown_ones() -> None:
    classes = ["ant", "bee", "cat"]  # the dataset gained "ant" after the model trained on bee and cat
    dataset = view_of({"classes": classes, "split_names": ["s"], "images": [
        _image("a.png", "test", "ant", classes), _image("b.png", "test", "bee", classes),
        _image("c.png", "test", "cat", classes), _image("u.png", "test", None, classes)]})
    samples, skipped = RUNTIME.evaluation_samples(dataset, 0, "test", (8, 8), ["bee", "cat"])
    assert samples == [("b.png", 0), ("c.png", 1)] and skipped == 1


def test_predictions_are_the_top_k_classes_most_probable_first() -> None:
    output = (np.array([0.1, 0.6, 0.3], dtype=np.float32), 0.5)
    answer = RUNTIME.predictions(output, ["a", "b", "c"], (64, 64), {"top_k": 2})
    assert answer == [{"class_id": 1, "class_name": "b", "confidence": pytest.approx(0.6)},
                      {"class_id": 2, "class_name": "c", "confidence": pytest.approx(0.3)}]
    assert len(RUNTIME.predictions(output, ["a", "b", "c"], (64, 64), {})) == 3  # top 5, capped at the classes
