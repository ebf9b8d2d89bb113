"""The one place where errors become HTTP responses.

Domain errors (``modelyard.core.errors``) map to statuses by their code;
Litestar's own exceptions (404 route, 405, malformed JSON, validation) are
rewritten into the same envelope; anything else is a 500 with a generic
message while the traceback goes to the server log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
)

from modelyard.core.errors import ModelyardError
from modelyard.core.storage import STORAGE_FULL_ERRNOS, STORAGE_FULL_MESSAGE

log = logging.getLogger("modelyard.api")

STATUS_BY_CODE: dict[str, int] = {
    "VALIDATION_ERROR": HTTP_422_UNPROCESSABLE_ENTITY,
    "NOT_FOUND": HTTP_404_NOT_FOUND,
    "CONFLICT": HTTP_409_CONFLICT,
    "PAYLOAD_TOO_LARGE": HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    "UNSUPPORTED_MEDIA_TYPE": HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    "FORBIDDEN": HTTP_403_FORBIDDEN,
    "UNAUTHORIZED": 401,
    "BAD_REQUEST": HTTP_400_BAD_REQUEST,
    "METHOD_NOT_ALLOWED": 405,
    "INTERNAL_ERROR": HTTP_500_INTERNAL_SERVER_ERROR,
    "PLUGIN_ERROR": HTTP_500_INTERNAL_SERVER_ERROR,  # a broken plugin is the server's fault, not the client's
    "INSUFFICIENT_STORAGE": 507,  # disk or quota full: nothing was changed, retry after freeing space
}

CODE_BY_HTTP_STATUS: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
}


def error_response(
    status_code: int, code: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Response[dict[str, Any]]:
    body = {"status": "error", "error": {"code": code, "message": message, "details": details or {}}}
    return Response(content=body, status_code=status_code, media_type=MediaType.JSON, headers=headers)


def handle_domain_error(request: Request[Any, Any, Any], exc: ModelyardError) -> Response[dict[str, Any]]:
    status = STATUS_BY_CODE.get(exc.code, HTTP_400_BAD_REQUEST)
    return error_response(status, exc.code, exc.message, exc.details)


_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]*)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]*)`")
_AT_PATH = re.compile(r"at `\$\.?([^`]*)`")
#: Litestar's name for the request body parameter; clients know it as "the body".
_BODY_PARAM = "data"


def _validation_details(exc: ValidationException) -> tuple[str, list[dict[str, Any]]]:
    """Turn Litestar's ``extra`` into ``[{"field": "name", "message": ...}]`` with body field paths."""
    problems: list[dict[str, Any]] = []
    extra = exc.extra if isinstance(exc.extra, list) else ([exc.extra] if exc.extra else [])
    for item in extra:
        if not isinstance(item, dict):
            problems.append({"field": None, "message": str(item)})
            continue
        message = str(item.get("message", ""))
        field = item.get("key")
        source = item.get("source")
        if source == "body" and field == _BODY_PARAM and message == repr(_BODY_PARAM):
            # Litestar reports an empty body as a KeyError on its body parameter.
            message = "A JSON request body is required"
        named = _UNKNOWN_FIELD.search(message) or _MISSING_FIELD.search(message)
        if named:
            path = _AT_PATH.search(message)
            # Litestar moves the "at `$.a.b`" of a nested object into ``key`` (``data`` alone: the body itself)
            prefix = path.group(1) if path and path.group(1) else (field if field and field != _BODY_PARAM else "")
            field = f"{prefix}.{named.group(1)}" if prefix else named.group(1)
        elif (path := _AT_PATH.search(message)) and path.group(1):
            field = path.group(1).replace("[", ".").replace("]", "")
        elif source == "body" and field == _BODY_PARAM:
            field = "body"  # the problem is the body as a whole (e.g. an array instead of an object)
        problems.append({"field": field, "source": source, "message": message})
    summary = exc.detail or "Validation failed"
    if problems and problems[0]["message"]:
        summary = problems[0]["message"]
    return summary, problems


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    if isinstance(exc, ValidationException):
        message, problems = _validation_details(exc)
        fields = [p["field"] for p in problems if p.get("field")]
        if "is not valid JSON" in message or "Malformed" in message or "malformed" in message:
            return error_response(HTTP_400_BAD_REQUEST, "BAD_REQUEST", message, {"errors": problems})
        return error_response(
            HTTP_422_UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
            message,
            # ``field`` first, as in every domain VALIDATION_ERROR: a client reads one key whatever refused the input
            {"field": fields[0] if fields else None, "errors": problems, "fields": fields},
        )
    if isinstance(exc, NotFoundException):
        return error_response(HTTP_404_NOT_FOUND, "NOT_FOUND", f"No such endpoint: {request.method} {request.url.path}")
    if isinstance(exc, MethodNotAllowedException):
        return error_response(
            405, "METHOD_NOT_ALLOWED", f"Method {request.method} is not allowed on {request.url.path}",
            headers=exc.headers,
        )
    if isinstance(exc, PermissionDeniedException):
        return error_response(HTTP_403_FORBIDDEN, "FORBIDDEN", exc.detail or "Forbidden")
    status = exc.status_code
    if status >= 500:
        log.error("HTTP %s on %s %s: %s", status, request.method, request.url.path, exc.detail)
        return error_response(status, "INTERNAL_ERROR", "Internal server error")
    code = CODE_BY_HTTP_STATUS.get(status, "BAD_REQUEST")
    return error_response(status, code, exc.detail or code.replace("_", " ").capitalize(), headers=exc.headers)


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, OSError) and exc.errno in STORAGE_FULL_ERRNOS:
        # A write path that does not translate ENOSPC itself: still the clear 507, never a bare 500.
        log.error("storage full on %s %s: %s", request.method, request.url.path, exc)
        return error_response(507, "INSUFFICIENT_STORAGE", STORAGE_FULL_MESSAGE)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "Internal server error")


def handle_recursion(request: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    """A body nested deeper than the decoder recurses (msgspec says "while deserializing") is the client's error."""
    if "deserializ" in str(exc):
        return error_response(HTTP_400_BAD_REQUEST, "BAD_REQUEST", "Request body is nested too deeply to be parsed")
    return handle_unexpected(request, exc)


EXCEPTION_HANDLERS = {
    ModelyardError: handle_domain_error,
    HTTPException: handle_http_exception,
    RecursionError: handle_recursion,
    Exception: handle_unexpected,
}
