"""Refuse requests a browser on another origin could forge (DNS rebinding, CSRF).

A request must name an allowed host in ``Host``: the bound host, ``localhost``,
``127.0.0.1``, ``[::1]`` or one from the allow-list (``*`` allows any). A
state-changing request that carries an ``Origin`` header must come from an
allowed host too. Plain ASGI so it runs before routing and costs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_without_port(host: str) -> str:
    """``[::1]:8000`` -> ``::1``, ``Example.com:80`` -> ``example.com``."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class HostPolicy:
    def __init__(self, bound_host: str, extra_hosts: list[str]) -> None:
        names = {*LOOPBACK_NAMES, *(host_without_port(h) for h in extra_hosts)}
        if bound_host not in ("0.0.0.0", "::", ""):
            names.add(host_without_port(bound_host))
        self.allow_any = "*" in extra_hosts
        self.allowed = frozenset(names)

    def allows(self, host: str | None) -> bool:
        if self.allow_any:
            return True
        return host is not None and host_without_port(host) in self.allowed


def host_check_middleware(policy: HostPolicy) -> Callable[[ASGIApp], ASGIApp]:
    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not policy.allows(headers.get("host")):
                await _forbid(send, f"Host '{headers.get('host', '')}' is not allowed")
                return
            origin = headers.get("origin")
            if origin and scope.get("method", "GET") not in SAFE_METHODS:
                origin_host = urlsplit(origin).hostname if origin != "null" else None
                if not policy.allows(origin_host):
                    await _forbid(send, f"Cross-site request from origin '{origin}' is not allowed")
                    return
            await app(scope, receive, send)

        return middleware

    return factory


async def _forbid(send: Send, message: str) -> None:
    body = json.dumps({"status": "error", "error": {"code": "FORBIDDEN", "message": message, "details": {}}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
