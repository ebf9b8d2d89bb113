"""Atomic JSON files: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from modelyard.core import jsonio
from modelyard.core.errors import CorruptDataError
from modelyard.core.jsonio import TEMP_PREFIX, atomic_write_json, read_json, remove_stale_temp_files
from modelyard.core.workspace import Workspace


def _temp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(TEMP_PREFIX + "*"))


def test_write_then_read_round_trips_unicode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "doc.json"
    doc = {"name": "Café 猫 🚀", "n": [1, 2.5, None, True], "nested": {"a": "b"}}
    atomic_write_json(target, doc)
    assert read_json(target) == doc
    assert "猫" in target.read_text(encoding="utf-8")  # stored as UTF-8, not \\u escapes
    assert _temp_files(tmp_path) == []


def test_write_replaces_the_previous_content(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    atomic_write_json(target, {"version": 1, "pad": "x" * 10_000})
    atomic_write_json(target, {"version": 2})
    assert read_json(target) == {"version": 2}


def test_failing_rename_keeps_old_file_and_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "doc.json"
    atomic_write_json(target, {"version": 1})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "rename failed")

    monkeypatch.setattr(jsonio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        atomic_write_json(target, {"version": 2})
    assert read_json(target) == {"version": 1}
    assert _temp_files(tmp_path) == []


def test_disk_full_while_writing_keeps_old_file_and_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "doc.json"
    atomic_write_json(target, {"version": 1})

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jsonio.os, "fsync", disk_full)
    with pytest.raises(OSError) as raised:
        atomic_write_json(target, {"version": 2, "pad": "x" * 100_000})
    assert raised.value.errno == errno.ENOSPC
    assert read_json(target) == {"version": 1}
    assert _temp_files(tmp_path) == []


def test_unserialisable_object_never_touches_the_file(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    atomic_write_json(target, {"version": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"version": 2, "bad": object()})
    assert read_json(target) == {"version": 1}
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize("content", [b'{"version": 1, "pad": "xx', b"\xff\xfe not utf-8", b""])
def test_reading_a_broken_file_raises_corrupt_data_naming_it(tmp_path: Path, content: bytes) -> None:
    target = tmp_path / "project.json"
    target.write_bytes(content)
    with pytest.raises(CorruptDataError) as raised:
        read_json(target)
    assert raised.value.details == {"file": "project.json"}
    assert "project.json" in raised.value.message


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from modelyard.core.jsonio import atomic_write_json

    target = Path(sys.argv[1])
    version = 0
    while True:
        version += 1
        # ~300 kB per version so a kill often lands inside a write.
        atomic_write_json(target, {"version": version, "pad": [version] * 60_000})
        if version == 1:
            print("started", flush=True)
    """
)


def test_writer_killed_midway_never_leaves_a_torn_file(tmp_path: Path) -> None:
    """SIGKILL a writer at random moments: the file always parses, readers never see a torn one."""
    target = tmp_path / "doc.json"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    rng = random.Random(1234)
    reader_errors: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                doc = json.loads(target.read_bytes())
            except FileNotFoundError:
                continue
            except ValueError as exc:
                reader_errors.append(str(exc))
                continue
            reads += 1
            if doc["pad"][-1] != doc["version"] or len(doc["pad"]) != 60_000:
                reader_errors.append(f"mixed content at version {doc['version']}")

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    versions_seen = set()
    try:
        for _ in range(12):
            writer = subprocess.Popen([sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True)
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "started"
            time.sleep(rng.uniform(0.0, 0.15))
            writer.send_signal(signal.SIGKILL)
            assert writer.wait(timeout=10) == -signal.SIGKILL
            writer.stdout.close()
            doc = read_json(target)  # raises CorruptDataError on a torn file
            assert doc["pad"] == [doc["version"]] * 60_000
            versions_seen.add(doc["version"])
            # Temp files the dead writer left are hidden and removed by the start-up cleanup.
            assert all(p.name.startswith(TEMP_PREFIX + "doc.json.") for p in _temp_files(tmp_path))
            remove_stale_temp_files(tmp_path, min_age_s=0)
            assert _temp_files(tmp_path) == []
    finally:
        stop.set()
        thread.join(timeout=10)
    assert reader_errors == []
    assert reads > 0
    assert max(versions_seen) > 1  # the writers really replaced the file while we read it


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_workspace_prepare_removes_stale_temp_files_and_keeps_everything_else(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    workspace.prepare()
    project = workspace.projects_dir / "proj-abcdefgh"
    (project / "dataset").mkdir(parents=True)
    atomic_write_json(project / "project.json", {"id": "proj-abcdefgh"})
    stale = [project / f"{TEMP_PREFIX}project.json.x1", project / "dataset" / f"{TEMP_PREFIX}dataset.json.x2"]
    for path in stale:
        path.write_text('{"half": ')
        _age(path, 3600)
    live = project / f"{TEMP_PREFIX}project.json.live"  # a worker writing right now, during a server restart
    live.write_text('{"in": "progress"')
    (workspace.staging_dir / "upload-leftover").mkdir()

    Workspace(tmp_path / "ws").prepare()

    assert not any(p.exists() for p in stale)
    assert live.exists()
    assert read_json(project / "project.json") == {"id": "proj-abcdefgh"}
    assert list(workspace.staging_dir.iterdir()) == []


def test_stale_temp_cleanup_does_not_follow_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    root = tmp_path / "root"
    root.mkdir()
    link = root / f"{TEMP_PREFIX}evil"
    link.symlink_to(outside)
    assert remove_stale_temp_files(root, min_age_s=0) == 0
    assert outside.read_text() == "keep me"


def test_written_json_is_indented_utf8_and_non_finite_numbers_become_null(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    atomic_write_json(path, {"name": "café", "loss": float("nan"), "best": float("inf"), "ids": [1, 2]})
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "name": "café",') and text.endswith("}\n")
    assert read_json(path) == {"name": "café", "loss": None, "best": None, "ids": [1, 2]}


def test_subclasses_of_plain_types_are_written_as_their_plain_values(tmp_path: Path) -> None:
    class Version(str):  # like torch.__version__
        pass

    class Count(int):
        pass

    atomic_write_json(tmp_path / "doc.json", {"torch": Version("2.14.1"), "n": Count(3)})
    assert read_json(tmp_path / "doc.json") == {"torch": "2.14.1", "n": 3}
