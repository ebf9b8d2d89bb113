"""The statuses every job shares (DESIGN section 11), defined once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ..records import JobRecord

R = TypeVar("R", bound="JobRecord")

JOB_STATUSES = ("pending", "running", "completed", "failed", "stopped", "interrupted")
ACTIVE_STATUSES = frozenset({"pending", "running"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "stopped", "interrupted"})


def wait_while_active(read: Callable[[], R], timeout_s: float, poll_s: float = 0.025) -> R:
    """``read()`` again until the job is no longer pending or running, or ``timeout_s`` has passed; the last record.

    What a client's ``?wait=`` asks for: one request that answers when the job
    has ended (or with its current state when the wait runs out). Re-reading
    a small record every 25 ms costs well under 1 % of a core, and the answer
    comes within 25 ms of the end.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    record = read()
    while record.status in ACTIVE_STATUSES and time.monotonic() < deadline:
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        record = read()
    return record
