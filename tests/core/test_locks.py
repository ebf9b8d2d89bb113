"""Per-name locks across threads and processes: read-modify-write never loses an update."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType

import pytest

from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.locks import LockTable

_WORKER = textwrap.dedent(
    """
    import sys
    import threading
    import time
    from pathlib import Path

    from modelyard.core.jsonio import atomic_write_json, read_json
    from modelyard.core.locks import LockTable


    def increment(table, counter, times):
        for _ in range(times):
            with table.hold("counter"):
                value = read_json(counter)["value"]
                time.sleep(0.001)  # widen the window in which an unlocked writer would lose updates
                atomic_write_json(counter, {"value": value + 1})


    def run_threads(table, counter, threads, times):
        workers = [threading.Thread(target=increment, args=(table, counter, times)) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()


    if __name__ == "__main__":
        run_threads(LockTable(Path(sys.argv[1])), Path(sys.argv[2]), threads=2, times=10)
    """
)


@pytest.fixture
def worker_script(tmp_path: Path) -> Path:
    script = tmp_path / "lock_worker.py"
    script.write_text(_WORKER)
    return script


@pytest.fixture
def worker(worker_script: Path) -> ModuleType:
    """The same increment code the subprocesses run, imported into this process."""
    spec = importlib.util.spec_from_file_location("lock_worker", worker_script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def counter(tmp_path: Path) -> Path:
    path = tmp_path / "counter.json"
    atomic_write_json(path, {"value": 0})
    return path


def test_threads_incrementing_under_the_lock_lose_no_update(tmp_path: Path, worker: ModuleType, counter: Path) -> None:
    worker.run_threads(LockTable(tmp_path / ".locks"), counter, threads=8, times=15)
    assert read_json(counter) == {"value": 8 * 15}


def test_processes_with_threads_incrementing_under_the_lock_lose_no_update(
    tmp_path: Path, worker_script: Path, worker: ModuleType, counter: Path
) -> None:
    """Four processes x two threads, each process with its own LockTable over the same lock folder."""
    processes = [
        subprocess.Popen([sys.executable, str(worker_script), str(tmp_path / ".locks"), str(counter)]) for _ in range(4)
    ]
    # This process joins in too, through yet another LockTable.
    worker.run_threads(LockTable(tmp_path / ".locks"), counter, threads=2, times=10)
    assert [process.wait(timeout=120) for process in processes] == [0, 0, 0, 0]
    assert read_json(counter) == {"value": 4 * 2 * 10 + 2 * 10}


def test_lock_is_reentrant_within_one_thread(tmp_path: Path) -> None:
    table = LockTable(tmp_path / ".locks")
    with table.hold("proj-abcdefgh"), table.hold("proj-abcdefgh"):
        entered = True
    assert entered
    # Released completely: another process can take it at once.
    fd = os.open(tmp_path / ".locks" / "proj-abcdefgh.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_held_lock_blocks_other_processes(tmp_path: Path) -> None:
    table = LockTable(tmp_path / ".locks")
    with table.hold("proj-abcdefgh"):
        fd = os.open(tmp_path / ".locks" / "proj-abcdefgh.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_different_names_do_not_block_each_other(tmp_path: Path) -> None:
    table = LockTable(tmp_path / ".locks")
    acquired = threading.Event()

    def take_other() -> None:
        with table.hold("proj-bbbbbbbb"):
            acquired.set()

    with table.hold("proj-aaaaaaaa"):
        thread = threading.Thread(target=take_other)
        thread.start()
        assert acquired.wait(timeout=10)
    thread.join(timeout=10)


def test_same_name_blocks_another_thread_until_released(tmp_path: Path) -> None:
    table = LockTable(tmp_path / ".locks")
    acquired = threading.Event()

    def take_same() -> None:
        with table.hold("proj-aaaaaaaa"):
            acquired.set()

    with table.hold("proj-aaaaaaaa"):
        thread = threading.Thread(target=take_same)
        thread.start()
        assert not acquired.wait(timeout=0.3)
    assert acquired.wait(timeout=10)
    thread.join(timeout=10)


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "a\\b", ".hidden", "..", "nul\x00byte", "x" * 300])
def test_lock_names_that_are_not_plain_file_names_are_refused(tmp_path: Path, name: str) -> None:
    table = LockTable(tmp_path / "ws" / ".locks")
    with pytest.raises(ValueError, match="invalid lock name"):
        with table.hold(name):
            pass
    assert not (tmp_path / "escape.lock").exists()
    assert not (tmp_path / "ws" / ".locks").exists() or list((tmp_path / "ws" / ".locks").iterdir()) == []
