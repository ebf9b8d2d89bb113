"""A full disk is a clear, expected error, not a crash.

``ENOSPC`` (no space) and ``EDQUOT`` (quota) become ``StorageFullError``
(wire code ``INSUFFICIENT_STORAGE``, HTTP 507). The writers that translate
them (atomic writes, imports) have already removed what they half-wrote, so
the message can promise that nothing changed.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from .errors import StorageFullError

STORAGE_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
STORAGE_FULL_MESSAGE = "The disk holding the workspace is full; nothing was changed. Free some space and retry."


def is_storage_full(exc: BaseException) -> bool:
    """A raw ``ENOSPC``/``EDQUOT`` (one already translated is left alone)."""
    return isinstance(exc, OSError) and not isinstance(exc, StorageFullError) and exc.errno in STORAGE_FULL_ERRNOS


def storage_full_error(exc: OSError, what: str) -> StorageFullError:
    """The domain error for a full disk while writing ``what`` (e.g. ``dataset.json``)."""
    reason = exc.strerror or os.strerror(exc.errno or errno.ENOSPC)
    return StorageFullError(
        f"The disk holding the workspace is full ({reason}) while writing {what}; nothing was changed. "
        "Free some space and retry.",
        {"what": what, "errno": exc.errno},
        error_number=exc.errno or errno.ENOSPC,
    )


@contextlib.contextmanager
def translate_storage_full(what: str) -> Iterator[None]:
    """Re-raise ``ENOSPC``/``EDQUOT`` from the block as ``StorageFullError``; other errors pass unchanged.

    Use it around a write whose own cleanup (``finally``) already undoes the
    partial result.
    """
    try:
        yield
    except OSError as exc:
        if is_storage_full(exc):
            raise storage_full_error(exc, what) from exc
        raise
