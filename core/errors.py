"""Domain errors of modelyard.

They carry a stable machine-readable ``code``, a human message and optional
``details``; they know nothing about HTTP. ``modelyard.api`` maps each code to a
status in one place (``api/errors.py``).
"""

from __future__ import annotations

from typing import Any


class ModelyardError(Exception):
    """Base of every error a user can cause or see."""

    code: str = "ERROR"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class ValidationError(ModelyardError):
    """Input that is well-formed but not acceptable (names the offending field)."""

    code = "VALIDATION_ERROR"

    def __init__(self, message: str, field: str | None = None, details: dict[str, Any] | None = None) -> None:
        merged = dict(details or {})
        if field is not None:
            merged.setdefault("field", field)
        super().__init__(message, merged)
        self.field = field


class NotFoundError(ModelyardError):
    """Something addressed by id or name does not exist.

    Every subclass answers with the wire code ``NOT_FOUND`` (as DESIGN's example
    shows); ``details.resource`` says what was missing.
    """

    code = "NOT_FOUND"
    resource = "resource"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        merged = {"resource": self.resource, **(details or {})}
        super().__init__(message, merged)


class ProjectNotFoundError(NotFoundError):
    resource = "project"

    def __init__(self, project_id: str) -> None:
        super().__init__(f"Project {project_id} not found", {"project_id": project_id})


class ImageNotFoundError(NotFoundError):
    resource = "image"


class SplitNotFoundError(NotFoundError):
    resource = "split"


class ExperimentNotFoundError(NotFoundError):
    resource = "experiment"


class RunNotFoundError(NotFoundError):
    resource = "run"


class EvaluationNotFoundError(NotFoundError):
    resource = "evaluation"


class ExportNotFoundError(NotFoundError):
    resource = "export"


class ModelNotFoundError(NotFoundError):
    """A model id the project's prediction cache does not hold (never loaded, unloaded or evicted)."""

    resource = "model"


class ConflictError(ModelyardError):
    """The request clashes with the current state (e.g. a run is training)."""

    code = "CONFLICT"


class ForbiddenError(ModelyardError):
    code = "FORBIDDEN"


class PayloadTooLargeError(ModelyardError):
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaTypeError(ModelyardError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class CorruptDataError(ModelyardError):
    """A file of the workspace cannot be read (e.g. a hand-edited, broken JSON)."""

    code = "CONFLICT"


class PluginError(ModelyardError):
    """A plugin misbehaved while registering (duplicate name, bad object)."""

    code = "PLUGIN_ERROR"


def did_you_mean(name: str, available: list[str], limit: int = 3) -> list[str]:
    """The known names closest to a mistyped one, closest first, ties in ``available`` order (case-insensitive)."""
    import difflib

    scored = [(difflib.SequenceMatcher(None, name.lower(), known.lower()).ratio(), index, known)
              for index, known in enumerate(available)]
    return [known for score, _, known in sorted(scored, key=lambda item: (-item[0], item[1])) if score >= 0.6][:limit]


class UnknownNameError(ValidationError):
    """A name nothing knows; suggests the closest known names and lists all that would work.

    The wire code stays ``VALIDATION_ERROR`` (the API contract has no other);
    ``details.suggestions`` and ``details.available`` tell the client what would have worked.
    """

    kind = "name"

    def __init__(self, name: str, available: list[str], field: str | None = None) -> None:
        shown = ", ".join(available[:50]) + (" ..." if len(available) > 50 else "")
        suggestions = did_you_mean(name, available)
        hint = f" Did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(
            f"Unknown {self.kind} '{name}'.{hint} Available: {shown or '(none)'}",
            field=field,
            details={"name": name, "suggestions": suggestions, "available": available},
        )
        self.name = name


class UnknownAugmentationError(UnknownNameError):
    kind = "augmentation"


class UnknownClassError(UnknownNameError):
    kind = "class"


class UnknownArchitectureError(UnknownNameError):
    kind = "architecture"


class UnknownImporterError(UnknownNameError):
    kind = "dataset format"


class UnknownExportFormatError(UnknownNameError):
    kind = "export format"


class UnknownTaskError(UnknownNameError):
    kind = "task"


class CheckpointError(ConflictError):
    """A run's checkpoint cannot be loaded safely (torn, foreign, or not a Lightning checkpoint)."""


class CheckpointNotFoundError(ConflictError):
    """A run has no ``best``/``last`` checkpoint file of that name (yet).

    A 409, not a 404: the run exists and the request is well formed; the run's
    state (it never finished an epoch, or was stopped before) forbids it (DESIGN section 2).
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {"resource": "checkpoint", **(details or {})})


class JobClaimedError(ConflictError):
    """A job is already claimed by another executor (or is not pending): each job runs exactly once."""


class WorkspaceInUseError(ConflictError):
    """Another ``modelyard serve`` already serves this workspace (one server per workspace)."""


class StorageFullError(ModelyardError, OSError):
    """The disk (or quota) is full: nothing was changed, and what was half-written is gone.

    Still an ``OSError`` with the original ``errno``, so code that handles
    disk errors as ``OSError`` keeps working; the API answers it 507.
    """

    code = "INSUFFICIENT_STORAGE"

    def __init__(self, message: str, details: dict[str, Any] | None = None, error_number: int = 28) -> None:
        super().__init__(message, details)
        self.errno = error_number  # 28 is ENOSPC
        self.strerror = message


class ArchitectureNotFoundError(NotFoundError):
    """``GET /api/training/models/{name}`` for a name no plugin registered (lists the available ones)."""

    resource = "architecture"


class ExecutorUnavailableError(ConflictError):
    """The job executor asked for cannot run jobs (Ray not installed, no cluster address, the cluster does not answer)."""
