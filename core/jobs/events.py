"""``events.jsonl``: a job's append-only event log (the SSE stream of a run replays it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..timeutil import utc_now_iso
from ..workspace import Workspace

EVENTS_JSONL = "events.jsonl"

#: How much of events.jsonl is read from the end to find the last id (grown when a line is longer).
TAIL_CHUNK_BYTES = 64 * 1024


class EventLog:
    """``events.jsonl``: append-only, ids strictly increasing across restarts and resumes."""

    def __init__(self, workspace: Workspace, run_dir: Path) -> None:
        self.workspace = workspace
        self.path = run_dir / EVENTS_JSONL
        self._lock_name = run_dir.name  # the job's lock

    def append(self, event: str, data: dict[str, Any]) -> int:
        """Append one event (fsynced) and return its id; costs the same on the first and the millionth event."""
        with self.workspace.locks.hold(self._lock_name):
            last, torn = self._tail()
            line = json.dumps({"id": last + 1, "event": event, "data": data, "time": utc_now_iso()}, ensure_ascii=False)
            with open(self.path, "a", encoding="utf-8") as handle:
                # a killed writer's torn line gets its own line, or it would swallow this event
                handle.write(("\n" if torn else "") + line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            return last + 1

    def last_id(self) -> int:
        return self._tail()[0]

    def _tail(self) -> tuple[int, bool]:
        """``(id of the last complete event, whether the file ends in a torn line)``, reading from the end."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return 0, False
        with handle:
            size = handle.seek(0, os.SEEK_END)
            chunk = TAIL_CHUNK_BYTES
            while True:
                start = max(0, size - chunk)
                handle.seek(start)
                lines = handle.read(size - start).split(b"\n")
                torn = lines[-1] != b""
                # lines[-1] is empty or unterminated (whole but for its newline: its id counts once the
                # newline is added); lines[0] may be cut by the chunk start
                for raw in reversed(lines if start == 0 else lines[1:]):
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and isinstance(entry.get("id"), int):
                        return entry["id"], torn
                if start == 0:
                    return 0, torn
                chunk *= 4

    def read(self, after_id: int = 0) -> list[dict[str, Any]]:
        """Complete events with ``id > after_id`` (a torn last line, from a killed writer, is ignored)."""
        if not self.path.exists():
            return []
        events = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if not line.endswith("\n"):
                    break
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("id"), int) and entry["id"] > after_id:
                    events.append(entry)
        return events


