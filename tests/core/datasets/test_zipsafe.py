"""Safe ZIP extraction: hostile entries are refused before anything lands outside the staging folder."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from modelyard.core.datasets.zipsafe import HostileArchiveError, extract_zip
from modelyard.core.errors import PayloadTooLargeError, ValidationError
from tests.core.datasets.factories import image_bytes, many_entries_zip, write, zip_bomb, zip_bytes, zip_with_symlink

BIG = 10**9


def everything_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def extract(tmp_path: Path, archive: bytes, max_entries: int = 1000, max_bytes: int = BIG) -> Path:
    path = write(tmp_path / "upload.zip", archive)
    return extract_zip(path, tmp_path / "staging" / "out", max_entries=max_entries, max_bytes=max_bytes)


def test_benign_zip_is_extracted_and_its_single_top_folder_becomes_the_root(tmp_path: Path) -> None:
    root = extract(tmp_path, zip_bytes({"data/cat/a.png": image_bytes(), "data/dog/b.png": image_bytes(colour=1)}))
    assert root == tmp_path / "staging" / "out" / "data"
    assert everything_under(root) == {"cat", "cat/a.png", "dog", "dog/b.png"}


def test_lone_folder_of_images_is_a_class_not_a_wrapper(tmp_path: Path) -> None:
    root = extract(tmp_path, zip_bytes({"cat/a.png": image_bytes(), "cat/b.png": image_bytes(colour=1)}))
    assert root == tmp_path / "staging" / "out"


def test_macos_metadata_folder_does_not_hide_the_single_top_folder(tmp_path: Path) -> None:
    root = extract(tmp_path, zip_bytes({"data/cat/a.png": image_bytes(), "__MACOSX/data/._a.png": b"x"}))
    assert root.name == "data"


@pytest.mark.parametrize(("name", "reason"), [
    ("../../x.png", "'..' path segment"),
    ("ok/../../x.png", "'..' path segment"),
    ("/abs/x.png", "absolute path"),
    ("a\\..\\..\\x.png", "backslash"),
    ("C:/x.png", "drive letter"),
    ("c:x.png", "drive letter"),
    ("a//x.png", "empty"),
])
def test_zip_slip_entries_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(HostileArchiveError, match=reason):
        extract(tmp_path, zip_bytes({"fine/a.png": image_bytes(), name: image_bytes(colour=1)}))
    assert everything_under(tmp_path) <= {"upload.zip", "staging", "staging/out", "staging/out/fine", "staging/out/fine/a.png"}


def test_symlink_entries_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HostileArchiveError, match="symbolic link entry"):
        extract(tmp_path, zip_with_symlink("data/link.png", "/etc/passwd"))
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("names", [("Cat/a.png", "cat/b.png"), ("a.png", "A.PNG"), ("x", "x/y.png")])
def test_names_that_collide_ignoring_case_or_kind_are_refused(tmp_path: Path, names: tuple[str, str]) -> None:
    with pytest.raises(HostileArchiveError):
        extract(tmp_path, zip_bytes({name: image_bytes(colour=i) for i, name in enumerate(names)}))


@pytest.mark.parametrize("name", ["/".join(["d"] * 3000) + "/x.png", "a" * 300 + "/x.png", "x/" + "b" * 300 + ".png"])
def test_names_too_long_or_too_deep_for_the_file_system_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(HostileArchiveError, match="cannot be created"):
        extract(tmp_path, zip_bytes({name: image_bytes()}))


def test_zip_bomb_trips_the_uncompressed_limit_counted_while_extracting(tmp_path: Path) -> None:
    archive = zip_bomb(64 * 1024 * 1024)
    assert len(archive) < 200_000
    with pytest.raises(PayloadTooLargeError, match="expands to more than 1048576 bytes"):
        extract(tmp_path, archive, max_bytes=1024 * 1024)
    written = sum(p.stat().st_size for p in (tmp_path / "staging").rglob("*") if p.is_file())
    assert written <= 1024 * 1024


def test_100k_entry_zip_trips_the_entry_limit_early(tmp_path: Path) -> None:
    archive = many_entries_zip(100_000)
    started = time.perf_counter()
    with pytest.raises(PayloadTooLargeError, match="more than 500 entries"):
        extract(tmp_path, archive, max_entries=500)
    assert time.perf_counter() - started < 10
    assert len([p for p in (tmp_path / "staging").rglob("*") if p.is_file()]) <= 500


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a readable ZIP"):
        extract(tmp_path, image_bytes())
