"""Refuse requests a browser on another origin could forge (DNS rebinding, CSRF).

A request must name an allowed host in ``Host``: the bound host, ``localhost``,
``127.0.0.1``, ``[::1]`` or one from the allow-list (``*`` allows any). A
state-changing request (and every WebSocket handshake, which browsers send
cross-site without asking) that carries an ``Origin`` header must come from an
allowed host too. Plain ASGI so it runs before routing and costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from .envelope import send_error

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_PORT = re.compile(r"\d*")


def host_without_port(host: str) -> str:
    """``[::1]:8000`` -> ``::1``, ``Example.com:80`` -> ``example.com``; malformed -> ``""`` (allowed nowhere)."""
    host = host.strip().lower()
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _PORT.fullmatch(rest[1:]))):
            return ""  # e.g. "[::1]x:80" must not pass as ::1
        return inside
    if host.count(":") == 1:
        host, _, port = host.partition(":")
        if not _PORT.fullmatch(port):
            return ""  # e.g. "evil.com:80@localhost"
    return host.rstrip(".")


class HostPolicy:
    def __init__(self, bound_host: str, extra_hosts: list[str]) -> None:
        names = {*LOOPBACK_NAMES, *(host_without_port(h) for h in extra_hosts)}
        if bound_host not in ("0.0.0.0", "::", ""):
            names.add(host_without_port(bound_host))
        self.allow_any = "*" in extra_hosts
        self.allowed = frozenset(names - {""})

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
                await _forbid(scope, send, f"Host '{headers.get('host', '')}' is not allowed")
                return
            origin = headers.get("origin")
            unsafe = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
            if origin and unsafe and not policy.allows(_origin_host(origin)):
                await _forbid(scope, send, f"Cross-site request from origin '{origin}' is not allowed")
                return
            await app(scope, receive, send)

        return middleware

    return factory


def _origin_host(origin: str) -> str | None:
    """Host of an ``Origin`` header; ``None`` for ``null`` or a malformed one (refused, never a 500)."""
    try:
        return urlsplit(origin).hostname if origin != "null" else None
    except ValueError:  # e.g. "http://[::1"
        return None


async def _forbid(scope: Scope, send: Send, message: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})  # the server answers 403
        return
    await send_error(send, 403, "FORBIDDEN", message)
