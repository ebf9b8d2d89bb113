"""An evaluation request's subset size (evaluation/service.py subset_size) is counted on the index's columns.

Equal to the dict-path count (tests/core/datasets/reference_samples.py) for
every split, subset and set of annotation types a task reads.
"""

from __future__ import annotations

import json

import pytest

from modelyard.core.datasets.view import DatasetView
from modelyard.core.evaluation.service import subset_size
from tests.core.datasets import reference_samples as reference
from tests.core.datasets.documents import SPLIT_VALUES, classification_document, detection_document


@pytest.mark.parametrize("doc", [classification_document(seed=21), detection_document(seed=22)],
                         ids=["classification", "detection"])
def test_subset_size_counts_the_images_with_an_annotation_the_task_reads(doc: dict) -> None:
    parsed, view = json.loads(json.dumps(doc)), DatasetView.from_document(doc)
    for types in (("label",), ("bbox",), ("label", "bbox"), ("mask",)):
        for split_index in range(len(parsed["split_names"]) + 1):
            for subset in SPLIT_VALUES:
                assert subset_size(view, split_index, subset, types) == \
                    reference.subset_size(parsed, split_index, subset, types)
    assert subset_size(view, 0, "train", ("label", "bbox")) > 0
