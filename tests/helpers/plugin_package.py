"""A plugin package written by ``modelyard plugin new``, installed the way pip installs it, without the network.

``pip install --no-deps --no-build-isolation --no-index --target SITE`` builds
the package with the venv's own setuptools into a private folder; a child
process sees it through ``PYTHONPATH`` and the in-process tests through
``sys.path``. The shared venv is never modified.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def install(package_dir: Path, site: Path) -> None:
    """Build and install ``package_dir`` into ``site``; fails with pip's output when pip does."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--no-input", "--target", str(site), str(package_dir)],
        capture_output=True, text=True, env=child_env(None), timeout=240,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"


def child_env(site: Path | None) -> dict[str, str]:
    """This environment with only ``site`` on ``PYTHONPATH``, no plugin switches and nothing of the running pytest."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTEST_", "MODELYARD_DISABLE_PLUGINS", "MODELYARD_TRACE_PLUGINS", "PYTHONPATH"))}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


def run_pytest(args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pytest ARGS`` in ``cwd`` with ``site`` importable (the installed package)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd, capture_output=True, text=True, env=child_env(site), timeout=280,
    )
