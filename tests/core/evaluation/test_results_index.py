"""Per-image results: one compact file, served as sorted and filtered pages."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from modelyard.core.errors import CorruptDataError, ValidationError
from modelyard.core.evaluation.index import ResultsIndex, ResultsIndexCache, ResultsQuery
from modelyard.core.evaluation.results import RESULTS_FILE, ResultsTable

CLASSES = ["cat", "dog", "fox"]


def _table() -> ResultsTable:
    # five images with hand-picked probabilities so every expected order can be written down
    rows = {
        "a.png": (0, [0.90, 0.05, 0.05]),  # cat -> cat  (confident, right)
        "b.png": (0, [0.20, 0.70, 0.10]),  # cat -> dog  (wrong)
        "c.png": (1, [0.10, 0.60, 0.30]),  # dog -> dog
        "d.png": (1, [0.05, 0.15, 0.80]),  # dog -> fox  (wrong, second worst loss on the true class)
        "e.png": (2, [0.50, 0.48, 0.02]),  # fox -> cat  (wrong, p(true)=0.02: the worst error)
    }
    names = ["c.png", "a.png", "e.png", "b.png", "d.png"]  # stored out of order on purpose
    targets = np.array([rows[n][0] for n in names])
    probabilities = np.array([rows[n][1] for n in names], dtype=np.float32)
    losses = -np.log(probabilities[np.arange(5), targets])
    return ResultsTable.from_probabilities(CLASSES, names, ["test"] * 5, targets, probabilities, losses)


@pytest.fixture
def index() -> ResultsIndex:
    return ResultsIndex(_table())


def _names(index: ResultsIndex, **query: object) -> list[str]:
    items, _ = index.query(ResultsQuery(**query))  # type: ignore[arg-type]
    return [item["filename"] for item in items]


def test_row_has_the_documented_shape(index: ResultsIndex) -> None:
    items, total = index.query(ResultsQuery(page_size=1))
    assert total == 5
    row = items[0]
    assert row["filename"] == "a.png" and row["subset"] == "test"
    assert row["ground_truth"] == {"class_id": 0, "class_name": "cat"}
    assert row["prediction"]["class_name"] == "cat" and row["prediction"]["confidence"] == pytest.approx(0.9)
    assert row["correct"] is True
    assert [p["class_name"] for p in row["probabilities"]] == ["cat", "dog", "fox"]
    assert row["probabilities"][0]["probability"] == pytest.approx(0.9)
    assert row["loss"] == pytest.approx(-np.log(0.9), rel=1e-5)


def test_default_sort_is_filename_ascending(index: ResultsIndex) -> None:
    assert _names(index) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
    assert _names(index, sort_order="desc") == ["e.png", "d.png", "c.png", "b.png", "a.png"]


def test_sort_by_error_puts_highest_true_class_loss_first(index: ResultsIndex) -> None:
    assert _names(index, sort_by="error") == ["e.png", "d.png", "b.png", "c.png", "a.png"]
    assert _names(index, sort_by="error", sort_order="asc") == ["a.png", "c.png", "b.png", "d.png", "e.png"]


def test_sort_by_confidence_is_most_confident_first_unless_asc(index: ResultsIndex) -> None:
    assert _names(index, sort_by="confidence") == ["a.png", "d.png", "b.png", "c.png", "e.png"]
    assert _names(index, sort_by="confidence", sort_order="asc") == ["e.png", "c.png", "b.png", "d.png", "a.png"]


def test_filters_combine_correctness_ground_truth_and_prediction(index: ResultsIndex) -> None:
    assert _names(index, filter_correct=True) == ["a.png", "c.png"]
    assert _names(index, filter_correct=False) == ["b.png", "d.png", "e.png"]
    assert _names(index, filter_class="dog") == ["c.png", "d.png"]
    assert _names(index, filter_predicted="cat") == ["a.png", "e.png"]
    assert _names(index, filter_class="cat", filter_correct=False, filter_predicted="dog") == ["b.png"]
    assert _names(index, filter_class="fox", filter_correct=True) == []


def test_pages_split_the_selection_and_report_the_filtered_total(index: ResultsIndex) -> None:
    first, total = index.query(ResultsQuery(page=1, page_size=2, filter_correct=False))
    second, _ = index.query(ResultsQuery(page=2, page_size=2, filter_correct=False))
    beyond, total_beyond = index.query(ResultsQuery(page=9, page_size=2, filter_correct=False))
    assert total == 3 and total_beyond == 3
    assert [r["filename"] for r in first + second] == ["b.png", "d.png", "e.png"]
    assert beyond == []


def test_unknown_filter_class_is_a_validation_error_naming_the_parameter(index: ResultsIndex) -> None:
    with pytest.raises(ValidationError) as info:
        index.query(ResultsQuery(filter_predicted="wolf"))
    assert info.value.field == "filter_predicted"
    assert info.value.details["available"] == CLASSES


def test_table_round_trips_through_one_file_without_pickle(tmp_path: Path) -> None:
    table = _table()
    path = tmp_path / RESULTS_FILE
    table.save(path)
    assert [p.name for p in tmp_path.iterdir()] == [RESULTS_FILE]
    loaded = ResultsTable.load(path)
    assert loaded.classes == CLASSES
    assert [loaded.row(i) for i in range(5)] == [table.row(i) for i in range(5)]
    with np.load(path, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)


def test_broken_results_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    path.write_bytes(b"not a zip")
    with pytest.raises(CorruptDataError):
        ResultsTable.load(path)


def test_cache_rereads_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    table = _table()
    table.save(path)
    cache = ResultsIndexCache()
    first = cache.get(path)
    assert cache.get(path) is first
    table.classes = ["lynx", "dog", "fox"]
    table.save(path)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-clock filesystems
    assert cache.get(path).table.classes[0] == "lynx"


def test_results_file_with_out_of_range_class_ids_is_reported_as_corrupt(tmp_path: Path) -> None:
    table = _table()
    table.predicted = table.predicted + 7  # names a class that does not exist
    table.save(tmp_path / RESULTS_FILE)
    with pytest.raises(CorruptDataError):
        ResultsTable.load(tmp_path / RESULTS_FILE)
