"""Local imports only from inside the import roots, compared as real paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard.core.datasets.sources import resolve_local_source
from modelyard.core.errors import ForbiddenError, ValidationError


def test_folder_inside_a_root_is_accepted_as_its_real_path(import_root: Path) -> None:
    (import_root / "set").mkdir()
    assert resolve_local_source(str(import_root / "set" / ".." / "set"), [import_root]) == import_root / "set"


@pytest.mark.parametrize("requested", ["/etc", "~", "/", "/tmp"])
def test_paths_outside_the_roots_are_forbidden(import_root: Path, requested: str) -> None:
    with pytest.raises(ForbiddenError):
        resolve_local_source(requested, [import_root])


def test_dot_dot_out_of_a_root_is_forbidden(import_root: Path) -> None:
    with pytest.raises(ForbiddenError):
        resolve_local_source(str(import_root / ".." / ".."), [import_root])


def test_symlink_inside_a_root_pointing_out_is_forbidden(import_root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", import_root / "link")
    with pytest.raises(ForbiddenError):
        resolve_local_source(str(import_root / "link"), [import_root])


def test_without_import_roots_every_local_import_is_forbidden(import_root: Path) -> None:
    with pytest.raises(ForbiddenError, match="no import roots"):
        resolve_local_source(str(import_root), [])


@pytest.mark.parametrize("requested", ["relative/path", "", "a\x00b"])
def test_relative_empty_or_nul_paths_are_invalid(import_root: Path, requested: str) -> None:
    with pytest.raises(ValidationError):
        resolve_local_source(requested, [import_root])


def test_missing_folder_inside_a_root_is_invalid(import_root: Path) -> None:
    with pytest.raises(ValidationError, match="not an existing folder"):
        resolve_local_source(str(import_root / "missing"), [import_root])
