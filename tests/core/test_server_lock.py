"""``core/server_lock.py``: one server per workspace, released on exit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard.core.errors import WorkspaceInUseError
from modelyard.core.server_lock import acquire_server_lock


def test_server_lock_is_exclusive_until_released(tmp_path: Path) -> None:
    held = acquire_server_lock(tmp_path, "127.0.0.1:1")
    with pytest.raises(WorkspaceInUseError, match=f"pid {os.getpid()}, 127.0.0.1:1"):
        acquire_server_lock(tmp_path, "127.0.0.1:2")
    held.release()
    acquire_server_lock(tmp_path, "127.0.0.1:3").release()


def test_refusal_is_a_conflict_that_names_the_workspace(tmp_path: Path) -> None:
    held = acquire_server_lock(tmp_path, "127.0.0.1:1")
    try:
        with pytest.raises(WorkspaceInUseError) as refused:
            acquire_server_lock(tmp_path, "127.0.0.1:2")
        assert refused.value.code == "CONFLICT"
        assert str(tmp_path) in refused.value.message
        assert refused.value.details["holder"]["pid"] == os.getpid()
    finally:
        held.release()
