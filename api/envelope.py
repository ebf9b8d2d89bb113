"""The success envelope ``{"status": "ok", "data": ...}`` as a typed Struct.

Handlers return ``Ok[T]`` so the OpenAPI document shows the real payload type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, Literal, TypeVar

import msgspec
from litestar.params import QueryParameter

from modelyard.core.jobs.status import wait_while_active
from modelyard.core.records import JobRecord
from modelyard.core.settings import Settings

T = TypeVar("T")
R = TypeVar("R", bound=JobRecord)


#: The longest ``?wait=`` a job's GET accepts (the server may end a wait sooner: ``Settings.max_wait_s``).
MAX_WAIT_S = 600
#: ``?wait=`` of a job's GET (minimum 0 spelled out: Litestar leaves a falsy bound out of the schema).
WaitSeconds = Annotated[float, QueryParameter(
    ge=0, le=MAX_WAIT_S, schema_extra={"minimum": 0},
    description="Seconds to wait for the job to end before answering (0: answer at once); the answer is the "
                "record when it ended, or as it is when the wait ran out")]


def after_wait(read: Callable[[], R], wait: float, settings: Settings) -> R:
    """A job's record once it has ended, or when ``?wait=`` (capped at ``settings.max_wait_s``) has run out."""
    return wait_while_active(read, min(wait, settings.max_wait_s))


class Ok(msgspec.Struct, Generic[T]):
    data: T
    status: Literal["ok"] = "ok"


class ErrorBody(msgspec.Struct):
    code: str
    message: str
    details: dict[str, object] = msgspec.field(default_factory=dict)


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody
    status: Literal["error"] = "error"


#: Page numbers and sizes beyond any real list, still exact in a JSON number (services cap page sizes).
MAX_QUERY_INT = 2**31 - 1


class Page(msgspec.Struct, Generic[T]):
    """One page of a paginated list (DESIGN section 2)."""

    items: list[T]
    page: int
    page_size: int
    total: int
    pages: int


class Deleted(msgspec.Struct):
    """Body of every successful DELETE: which resource is gone."""

    id: str
    deleted: bool = True


def ok(data: T) -> Ok[T]:
    return Ok(data=data)


async def send_error(send: Any, status: int, code: str, message: str, details: dict[str, object] | None = None) -> None:
    """Answer with the error envelope from plain ASGI middleware (before any handler runs)."""
    body = msgspec.json.encode(ErrorEnvelope(ErrorBody(code, message, details or {})))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
