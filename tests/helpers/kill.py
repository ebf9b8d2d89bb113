"""SIGKILL a child process at a chosen moment of its work (the crash tests' one way to land a kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable


def sigkill_when(child: subprocess.Popen, ready: Callable[[], bool], what: str,  # type: ignore[type-arg]
                 timeout_s: float = 120) -> None:
    """Poll ``ready`` until it holds, then SIGKILL ``child``; fail if it exits first or ``what`` never happens."""
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, f"{what} never happened"
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
