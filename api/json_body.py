"""Bodies of JSON endpoints are accepted only as JSON (415 ``UNSUPPORTED_MEDIA_TYPE`` otherwise).

A cross-site HTML form can POST ``text/plain``, ``application/x-www-form-urlencoded``
or ``multipart/form-data`` without a CORS preflight; a server that parsed such a
body as JSON would let any web page create projects or start runs in the
browser of someone who can reach it. The ``Origin`` check refuses browsers
that send ``Origin``; this refuses the request shape itself. A request to a
JSON endpoint that names another content type is refused before its handler
runs; a request without a ``Content-Type`` (no form can send one) or without
a body is left to the handler. Endpoints that read their own body (the ZIP
upload) take no ``data`` parameter and are not concerned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .envelope import send_error

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type, with any parameters (``; charset=utf-8``)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def takes_json_body(handler: Any) -> bool:
    """Whether a Litestar route handler decodes a JSON request body (it declares a ``data`` parameter)."""
    signature = getattr(handler, "parsed_fn_signature", None)
    return signature is not None and "data" in signature.parameters


def json_body_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in BODY_METHODS and takes_json_body(scope.get("route_handler")):
            content_type = next((value.decode("latin-1") for name, value in scope.get("headers", [])
                                 if name == b"content-type"), None)
            if content_type is not None and not is_json_media_type(content_type):
                await send_error(send, 415, "UNSUPPORTED_MEDIA_TYPE",
                                 f"This endpoint takes a JSON body: send it as application/json, not {content_type[:100]}",
                                 {"content_type": content_type[:100]})
                return
        await app(scope, receive, send)

    return middleware
