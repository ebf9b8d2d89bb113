"""A page's items gathered from the columns (``DatasetIndex.list_items``) equal those built image by image."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelyard.core.datasets.index import DatasetIndex
from modelyard.core.datasets.service import _list_item

from .test_streamed_rewrite import _document


def _odd(doc: dict) -> dict:
    """Hand-edited annotations too: a label without a name, one naming no class, a box before a label, short splits."""
    images = doc["images"]
    images[0]["annotations"] = [{"type": "label", "class_id": 0}]
    images[1]["annotations"] = [{"type": "label", "class_id": 9, "class_name": "not a class"}]
    images[2]["annotations"] = [{"type": "bbox", "class_id": 0, "class_name": "cat", "bbox": [1, 2, 3, 4]},
                                {"type": "label", "class_id": 1, "class_name": "dog"},
                                {"type": "label", "class_id": 0, "class_name": "cat"}]
    images[3]["split"] = []
    return doc


@pytest.mark.parametrize("task", ["classification", "object_detection"])
@pytest.mark.parametrize("boxes", [False, True])
def test_list_items_equal_the_image_by_image_items(task: str, boxes: bool) -> None:
    doc = _odd(_document(task, 400, ["a", "b"], seed=11))
    index = DatasetIndex.from_json(json.dumps(doc).encode())
    for positions in (index.select(), index.select("size", True)[:50], np.array([], dtype=np.int64), index.select()[7:8]):
        assert index.list_items(positions, boxes) == [_list_item(index.images[int(p)], boxes) for p in positions]
