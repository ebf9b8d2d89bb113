"""Driving the web UI in real headless Chromium (Debian's ``chromium``) with Playwright; see tests/ui/conftest.py."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ENABLE_HINT = "install Debian's chromium to run the browser tests: apt-get install -y chromium (.ci/run does this)"
#: screenshots of every page the tests visit (CI keeps them as artifacts)
ARTIFACTS = Path(os.environ.get("MODELYARD_UI_ARTIFACTS", REPO / ".artifacts" / "ui"))
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class Watched:
    """A page and what it did: every request URL, script errors, console errors."""

    page: Any
    base_url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        """Requests that left this server's origin (``blob:`` and ``data:`` URLs are the page's own)."""
        own = urlsplit(self.base_url)
        foreign = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme not in ("blob", "data") and (parts.scheme, parts.netloc) != (own.scheme, own.netloc):
                foreign.append(url)
        return foreign


def watch(page: Any, base_url: str) -> Watched:
    watched = Watched(page, base_url)
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on("pageerror", lambda error: watched.errors.append(f"page error: {error}"))

    def console(message: Any) -> None:
        # an API error the page handled (and shows) logs "Failed to load resource": not a script error
        if message.type == "error" and "Failed to load resource" not in message.text:
            watched.errors.append(f"console: {message.text}")

    page.on("console", console)
    return watched


def open_view(page: Any, route: str) -> Any:
    """Show ``#<route>`` (e.g. ``/p/proj-x/dataset``) and wait until the router has rendered it."""
    ready = "() => document.getElementById('view')?.dataset.ready || ''"
    if not page.url.startswith("http"):
        page.goto(f"/#{route}")
        page.wait_for_function("() => Boolean(document.getElementById('view')?.dataset.ready)")
        return page
    before = page.evaluate(ready)
    if urlsplit(page.url).fragment == route:
        page.reload()
        page.wait_for_function("() => Boolean(document.getElementById('view')?.dataset.ready)")
        return page
    page.evaluate("(hash) => { location.hash = hash; }", route)
    page.wait_for_function("(before) => { const now = document.getElementById('view')?.dataset.ready;"
                           " return Boolean(now) && now !== before; }", arg=before)
    return page


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save a screenshot as a test artifact (``ARTIFACTS/<name>.png``); returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
