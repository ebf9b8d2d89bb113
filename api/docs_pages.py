"""The API's documentation pages (``/schema/swagger``, ``/schema/rapidoc``) work offline.

Litestar's render plugins load Swagger UI and RapiDoc (and a favicon) from
public CDNs by default; on a machine without internet, or behind a firewall,
the pages stayed blank. We serve pinned copies shipped in the package
(``api/static/vendor/<package>-<version>/``, with their licence files, taken
unchanged from the npm packages), and send the pages with a
Content-Security-Policy that allows nothing from another origin (RapiDoc's
stylesheet names a web font on a CDN; the browser falls back to a local font).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from litestar import get
from litestar.datastructures import CacheControlHeader, MutableScopeHeaders
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.openapi.plugins import OpenAPIRenderPlugin, RapidocRenderPlugin, SwaggerRenderPlugin
from litestar.response import File
from litestar.types import Message, Scope

VENDOR_DIR = Path(__file__).parent / "static" / "vendor"
SWAGGER_UI = "swagger-ui-dist-5.18.2"
RAPIDOC = "rapidoc-9.3.4"
SCHEMA_PATH = "/schema"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"
#: Everything from this server; inline scripts and styles are how both pages start.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")


def docs_render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI and RapiDoc, loading their assets from this server."""
    swagger = f"{ASSETS_PATH}/{SWAGGER_UI}"
    return [
        SwaggerRenderPlugin(js_url=f"{swagger}/swagger-ui-bundle.js", css_url=f"{swagger}/swagger-ui.css",
                            standalone_preset_js_url=f"{swagger}/swagger-ui-standalone-preset.js", favicon=""),
        RapidocRenderPlugin(js_url=f"{ASSETS_PATH}/{RAPIDOC}/rapidoc-min.js", favicon=""),
    ]


MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain"}


def vendored_files() -> dict[tuple[str, str], Path]:
    """``(package folder, file name) -> path`` of every file shipped under ``VENDOR_DIR``."""
    return {(path.parent.name, path.name): path for path in VENDOR_DIR.glob("*/*") if path.is_file()}


def docs_assets_handler() -> HTTPRouteHandler:
    """``GET /schema/assets/{package}/{name}``: exactly the shipped files, by name (no path is ever built from the URL)."""
    files = vendored_files()

    @get(f"{ASSETS_PATH}/{{package:str}}/{{name:str}}", include_in_schema=False, sync_to_thread=False,
         cache_control=CacheControlHeader(max_age=86400))
    def docs_asset(package: Annotated[str, Parameter(max_length=100)], name: Annotated[str, Parameter(max_length=100)]) -> File:
        path = files.get((package, name))
        if path is None:
            raise NotFoundException(f"no asset {package}/{name}")
        return File(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"), content_disposition_type="inline")

    return docs_asset


async def docs_security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the documentation pages and their assets get the CSP above."""
    if message["type"] == "http.response.start" and str(scope.get("path", "")).startswith(SCHEMA_PATH):
        MutableScopeHeaders.from_message(message)["Content-Security-Policy"] = DOCS_CSP
