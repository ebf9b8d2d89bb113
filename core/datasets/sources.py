"""Where a local import may read from: only inside the operator's import roots.

Both the requested path and the roots are compared as real paths (symlinks
resolved), so a link inside a root that points elsewhere is refused like the
elsewhere it points to.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ForbiddenError, ValidationError

MAX_PATH_CHARS = 4096


def resolve_local_source(requested: str, import_roots: list[Path]) -> Path:
    """The real path of ``requested`` if it is a folder inside an import root; ``ForbiddenError`` otherwise."""
    if not requested or len(requested) > MAX_PATH_CHARS or "\x00" in requested:
        raise ValidationError("path must be a non-empty absolute path without NUL characters", field="path")
    expanded = os.path.expanduser(requested)
    if not os.path.isabs(expanded):
        raise ValidationError(f"path must be absolute (got {requested!r})", field="path")
    real = os.path.realpath(expanded)
    if not import_roots:
        raise ForbiddenError(
            "Local import is disabled: the server has no import roots (start it with --import-root DIR)",
            {"path": requested},
        )
    if not any(is_inside(real, os.path.realpath(root)) for root in import_roots):
        raise ForbiddenError(f"{requested} is outside the allowed import roots", {"path": requested})
    if not os.path.isdir(real):
        raise ValidationError(f"{requested} is not an existing folder", field="path")
    return Path(real)


def is_inside(path: str, root: str) -> bool:
    """True when the real path ``path`` is ``root`` or below it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
