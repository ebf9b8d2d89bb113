"""Resource identifiers: ``<prefix>-`` followed by 8 characters of ``[a-z0-9]``.

IDs reach us from URLs, so they are validated *before* they touch a path:
``is_valid_id`` is the only gate between a client string and a folder name.
"""

from __future__ import annotations

import re
import secrets
import string

PREFIXES = ("proj", "exp", "run", "eval", "export", "model")
_ALPHABET = string.ascii_lowercase + string.digits
# fullmatch, not ``$``: ``$`` also matches before a trailing newline ("proj-abcdefgh\n").
_ID_RE = re.compile(r"(proj|exp|run|eval|export|model)-[a-z0-9]{8}")


def new_id(prefix: str) -> str:
    """A fresh random id such as ``proj-a1b2c3d4``."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return f"{prefix}-" + "".join(secrets.choice(_ALPHABET) for _ in range(8))


def is_valid_id(value: str, prefix: str) -> bool:
    """True when ``value`` is a well-formed id of the given kind (safe as a folder name)."""
    return bool(_ID_RE.fullmatch(value)) and value.startswith(prefix + "-")
