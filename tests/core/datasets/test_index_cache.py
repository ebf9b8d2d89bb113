"""The on-disk index cache (issue 19): used only for the version it was built from; a stale or corrupt one is rebuilt."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard.core.datasets import index_cache
from modelyard.core.datasets.index import IndexCache
from modelyard.core.jsonio import atomic_write_json

from .test_index import synthetic


def _names(index) -> list[str]:  # type: ignore[no-untyped-def]
    return [index.images[i].filename for i in index.select()]


def test_a_fresh_process_maps_the_cache_and_sees_the_same_index(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    atomic_write_json(path, synthetic(40, splits=2))
    built = IndexCache().get(path)
    assert index_cache.cache_path(path).is_file()
    loaded = IndexCache().get(path)
    assert loaded is not None and built is not None
    assert _names(loaded) == _names(built)
    assert [loaded.images[i] for i in range(40)] == [built.images[i] for i in range(40)]
    assert loaded.split_distribution(1) == built.split_distribution(1)


def test_a_changed_dataset_json_is_never_answered_from_the_old_cache(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    atomic_write_json(path, synthetic(10))
    IndexCache().get(path)
    doc = synthetic(10)
    doc["images"][0]["size"] = 999  # the same number of bytes (sizes are 100-109), other content
    stat = path.stat()
    atomic_write_json(path, doc)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    index = IndexCache().get(path)
    assert index is not None and index.images[0].size == 999


def test_a_corrupt_cache_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    atomic_write_json(path, synthetic(30))
    IndexCache().get(path)
    cache = index_cache.cache_path(path)
    data = bytearray(cache.read_bytes())
    data[-100] ^= 0xFF  # a flipped bit in the columns
    cache.write_bytes(bytes(data))
    index = IndexCache().get(path)
    assert index is not None and len(index) == 30 and _names(index) == sorted(i["filename"] for i in synthetic(30)["images"])
    for broken in (b"", b"MODELYARD-INDEX 1\n" + b"\xff" * 20, cache.read_bytes()[:200]):
        cache.write_bytes(broken)
        index = IndexCache().get(path)
        assert index is not None and len(index) == 30


def test_a_big_cache_is_written_behind_and_the_newest_index_for_a_path_wins(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_cache, "BEHIND_BYTES", 0)  # every cache counts as big
    path = tmp_path / "dataset.json"
    atomic_write_json(path, synthetic(20))
    index = IndexCache().get(path)
    assert index is not None and index_cache.flush(timeout=30)
    cache = index_cache.cache_path(path)
    cache.unlink()
    older, newer = {"size": 1, "mtime_ns": 1, "digest": "a"}, {"size": 2, "mtime_ns": 2, "digest": "b"}
    index_cache.save_later(cache, older, index.arrays, index.meta)
    index_cache.save_later(cache, newer, index.arrays, index.meta)
    assert index_cache.flush(timeout=30)
    assert index_cache.load(cache, older) is None  # written first and replaced, or dropped while waiting
    loaded = index_cache.load(cache, newer)
    assert loaded is not None and loaded[1] == index.meta


def test_a_cache_that_cannot_be_written_is_only_logged_and_later_ones_still_are(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_cache, "BEHIND_BYTES", 0)
    path = tmp_path / "dataset.json"
    atomic_write_json(path, synthetic(5))
    index = IndexCache().get(path)
    assert index is not None and index_cache.flush(timeout=30)
    key = {"size": 3, "mtime_ns": 3, "digest": "c"}
    index_cache.save_later(tmp_path / "gone" / index_cache.NAME, key, index.arrays, index.meta)
    assert index_cache.flush(timeout=30)
    assert not (tmp_path / "gone").exists()
    index_cache.save_later(index_cache.cache_path(path), key, index.arrays, index.meta)
    assert index_cache.flush(timeout=30)
    assert index_cache.load(index_cache.cache_path(path), key) is not None


def test_a_small_cache_is_on_disk_when_the_index_is_returned(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    atomic_write_json(path, synthetic(50))
    IndexCache().get(path)
    assert index_cache.cache_path(path).is_file()  # no flush: written at once
