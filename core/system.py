"""Facts about the running service and its workspace disk usage."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from .workspace import Workspace


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            try:
                stat = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += stat.st_size
    return total


def workspace_stats(workspace: Workspace) -> dict[str, Any]:
    usage = shutil.disk_usage(workspace.root)
    projects = []
    for project_id in workspace.project_ids():
        projects.append({"id": project_id, "bytes": folder_bytes(workspace.project_dir(project_id))})
    return {
        "path": str(workspace.root),
        "disk": {"total_bytes": usage.total, "used_bytes": usage.used, "free_bytes": usage.free},
        "workspace_bytes": folder_bytes(workspace.root),
        "project_count": len(projects),
        "projects": projects,
    }


class Uptime:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 3)
