"""The statuses every job shares (DESIGN section 11), defined once."""

from __future__ import annotations

JOB_STATUSES = ("pending", "running", "completed", "failed", "stopped", "interrupted")
ACTIVE_STATUSES = frozenset({"pending", "running"})
TERMINAL_STATUSES = frozenset({"completed", "failed", "stopped", "interrupted"})
