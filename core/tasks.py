"""A project's task must be a registered one (``register_tasks``; DESIGN section 10)."""

from __future__ import annotations

from .registry import TaskRegistry


def check_task(task: str, tasks: TaskRegistry, field: str = "task") -> str:
    """Return ``task`` if a plugin registered it, else ``UnknownTaskError`` (422) listing the registered ones."""
    return tasks.get(task, field=field).id
