"""Following a run's ``events.jsonl`` as Server-Sent Events (DESIGN section 5).

Each event keeps the id it has in the file, so ids are strictly increasing
and a client reconnecting with ``Last-Event-ID`` gets exactly what it missed.
While nothing happens a ``: keep-alive`` comment keeps proxies from closing
the connection. The stream ends after the run's final ``end`` event (a
finished run replays its history and closes at once).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
from litestar.response import ServerSentEventMessage

from modelyard.core.errors import NotFoundError
from modelyard.core.training.run_folder import TERMINAL_STATUSES

#: ``read(after_id) -> (events after it, run status, name of the last event in the log)``
EventReader = Callable[[int], tuple[list[dict[str, Any]], str, str | None]]

#: A terminal run whose ``end`` event never comes (the worker died writing it) closes after this.
END_GRACE_S = 2.0
KEEP_ALIVE = "keep-alive"


def sse_message(event: dict[str, Any]) -> ServerSentEventMessage:
    data = json.dumps(event["data"], ensure_ascii=False)
    return ServerSentEventMessage(id=event["id"], event=event["event"], data=data)


async def follow_events(
    read: EventReader, after_id: int, poll_s: float, keepalive_s: float, end_grace_s: float = END_GRACE_S
) -> AsyncIterator[ServerSentEventMessage]:
    """Replay events after ``after_id``, then poll for new ones until the run has ended."""
    last_id = after_id
    quiet_since = time.monotonic()
    terminal_since: float | None = None
    while True:
        try:
            events, status, last_name = await anyio.to_thread.run_sync(read, last_id)
        except NotFoundError:
            return  # the run was deleted while we followed it
        for event in events:
            yield sse_message(event)
            last_id = event["id"]
        now = time.monotonic()
        if events:
            quiet_since = now
        if status in TERMINAL_STATUSES:
            if last_name == "end":
                return
            terminal_since = terminal_since if terminal_since is not None else now
            if now - terminal_since >= end_grace_s:
                return
        else:
            terminal_since = None  # e.g. resumed: a new attempt follows the old ``end``
        if now - quiet_since >= keepalive_s:
            yield ServerSentEventMessage(comment=KEEP_ALIVE, data=None)
            quiet_since = now
        await anyio.sleep(poll_s)
