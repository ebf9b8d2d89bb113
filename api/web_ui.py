"""The web UI (DESIGN section 13): static pages at ``/`` that talk to the public API.

The UI is a page shell plus ES modules under ``api/static/ui/`` (no build
step): every page fetches what it shows from ``/api/...`` in the browser, with
the same requests any REST client makes. That is why the pages are static and
not rendered on the server: the server has no private way to the data, and an
API token (when one is configured) lives only in the browser and travels in
the ``Authorization`` header, never in a URL or in the HTML. The shell and its
assets hold no data, so they are served without a token.

Every asset comes from this server (uPlot is vendored at a pinned version with
its licence); the pages are sent with a Content-Security-Policy that allows
nothing from another origin and no inline script or style element.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from litestar import Router, get
from litestar.datastructures import CacheControlHeader, MutableScopeHeaders
from litestar.exceptions import NotFoundException
from litestar.params import Parameter
from litestar.response import File
from litestar.types import Message, Scope

UI_DIR = Path(__file__).parent / "static" / "ui"
UI_PREFIX = "/ui"
#: Nothing from another origin; scripts and stylesheets only as files from here. Thumbnails and images are
#: fetched with the token and shown as ``blob:`` URLs; uPlot sizes its canvas through the CSSOM (allowed).
UI_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
          "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain",
               ".html": "text/html; charset=utf-8"}


def ui_files() -> dict[str, Path]:
    """``relative path -> file`` of every shipped UI file (URLs are looked up here, never joined onto a path)."""
    return {path.relative_to(UI_DIR).as_posix(): path for path in sorted(UI_DIR.rglob("*")) if path.is_file()}


def is_ui_path(path: str) -> bool:
    """``/`` and everything under ``/ui/``: the shell and its assets (no data, so no token needed)."""
    normalized = "/" + "/".join(segment for segment in path.split("/") if segment)
    return normalized == "/" or normalized == UI_PREFIX or normalized.startswith(UI_PREFIX + "/")


def web_ui_router() -> Router:
    """``GET /`` (the page shell) and ``GET /ui/{path}`` (exactly the shipped files)."""
    files = ui_files()

    @get("/", include_in_schema=False, sync_to_thread=False, cache_control=CacheControlHeader(no_cache=True))
    def ui_shell() -> File:
        return File(files["index.html"], media_type=MEDIA_TYPES[".html"], content_disposition_type="inline")

    # no-cache: the browser revalidates (ETag) so an upgraded server never runs yesterday's modules
    @get(f"{UI_PREFIX}/{{asset:path}}", include_in_schema=False, sync_to_thread=False,
         cache_control=CacheControlHeader(no_cache=True))
    def ui_asset(asset: Annotated[str, Parameter(max_length=200)]) -> File:
        path = files.get(asset.lstrip("/"))
        if path is None or path.name == "index.html":
            raise NotFoundException(f"no UI file {asset}")
        return File(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                    content_disposition_type="inline")

    return Router(path="/", route_handlers=[ui_shell, ui_asset])


async def ui_security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the UI's pages and assets get the CSP and no MIME sniffing or referrers."""
    if message["type"] == "http.response.start" and is_ui_path(str(scope.get("path", ""))):
        headers = MutableScopeHeaders.from_message(message)
        headers["Content-Security-Policy"] = UI_CSP
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
