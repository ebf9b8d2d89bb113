"""UTC timestamps in the one format the API uses: ISO 8601 with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now_iso() -> str:
    """Now, e.g. ``2026-02-19T10:00:00Z`` (second precision, as the reference shows)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: object) -> float | None:
    """Epoch seconds of a ``...Z`` timestamp written by ``utc_now_iso`` (None when absent or malformed)."""
    if not value:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None
