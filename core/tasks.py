"""The tasks the core knows how to train. Only classification for now."""

from __future__ import annotations

from .errors import UnknownTaskError

SUPPORTED_TASKS: tuple[str, ...] = ("classification",)


def check_task(task: str, field: str = "task") -> str:
    """Return ``task`` if supported, else a validation error listing the supported ones."""
    if task not in SUPPORTED_TASKS:
        raise UnknownTaskError(task, list(SUPPORTED_TASKS), field=field)
    return task
