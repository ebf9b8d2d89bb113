"""Optional bearer-token authentication for exposing the API beyond loopback.

Off by default: modelyard is a single-user service bound to 127.0.0.1. When
``Settings.api_token`` is set (``MODELYARD_API_TOKEN`` or
``--api-token-file``), every request to ``/api/...`` must carry
``Authorization: Bearer <token>``; anything else gets a 401 envelope with
``WWW-Authenticate: Bearer``. Deny by default: every path needs the token
except ``/api/system/health`` (so a reverse proxy or supervisor can probe
liveness; it reveals only status, version and uptime), the OpenAPI
document under ``/schema`` (it describes the API, not anyone's data) and the
web UI's page shell and assets (``/``, ``/ui/...``: static files with no data;
the page asks for the token and sends it with its API requests). Paths
are compared with repeated slashes collapsed, because the router treats
``//api/projects`` as ``/api/projects``. (Litestar runs middleware only for
paths that match a route; any other path is a 404 with nothing behind it.)

Plain ASGI, like the host check, so a refused request never reaches routing,
body parsing or an upload. The comparison is constant-time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

from .hostcheck import ASGIApp, Receive, Scope, Send
from .web_ui import is_ui_path

#: Paths answered without a token (after normalisation), and the prefix of the OpenAPI document.
OPEN_PATHS = frozenset({"/api/system/health"})
OPEN_PREFIX = "/schema"
SCHEME_NAME = "BearerToken"
_CHALLENGE = b'Bearer realm="modelyard"'


def token_matches(expected: str, authorization: str | None) -> bool:
    """True when ``authorization`` is ``Bearer <expected>`` (scheme case-insensitive, constant-time compare)."""
    if not authorization:
        return False
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode("utf-8"), expected.encode("utf-8"))


def needs_token(path: str) -> bool:
    """Every path except the health check, the OpenAPI document and the UI's static files (``//api//x/`` counts as ``/api/x``)."""
    normalized = "/" + "/".join(segment for segment in path.split("/") if segment)
    if normalized in OPEN_PATHS or is_ui_path(normalized):
        return False
    return not (normalized == OPEN_PREFIX or normalized.startswith(OPEN_PREFIX + "/"))


def token_auth_middleware(token: str) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware factory that refuses requests to protected paths without ``token``."""
    if not token:
        raise ValueError("an empty API token would let everyone in")

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] not in ("http", "websocket") or not needs_token(str(scope.get("path", ""))):
                await app(scope, receive, send)
                return
            authorization = None
            for key, value in scope.get("headers", []):
                if key.lower() == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            if token_matches(token, authorization):
                await app(scope, receive, send)
                return
            message = "A valid API token is required (Authorization: Bearer <token>)"
            if authorization:
                message = "The API token is missing or wrong (Authorization: Bearer <token>)"
            await _unauthorized(scope, send, message)

        return middleware

    return factory


def token_auth_middlewares(token: str | None) -> list[Callable[[ASGIApp], ASGIApp]]:
    """The middleware list for ``create_app``: empty when no token is configured."""
    return [token_auth_middleware(token)] if token else []


def openapi_security_options(token: str | None) -> dict[str, Any]:
    """``OpenAPIConfig`` keyword arguments declaring the bearer scheme, when a token is required."""
    if not token:
        return {}
    scheme = SecurityScheme(
        type="http",
        scheme="bearer",
        description="Required when the server runs with MODELYARD_API_TOKEN: send `Authorization: Bearer <token>`.",
    )
    security: list[SecurityRequirement] = [{SCHEME_NAME: []}]
    return {"components": Components(security_schemes={SCHEME_NAME: scheme}), "security": security}


async def _unauthorized(scope: Scope, send: Send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
        return
    body = json.dumps({"status": "error", "error": {"code": "UNAUTHORIZED", "message": message, "details": {}}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", _CHALLENGE),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
