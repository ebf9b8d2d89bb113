"""Browser tests of the web UI: real headless Chromium (Debian's ``chromium``) driven by Playwright.

Nothing is downloaded at test time: Playwright's Python package drives the installed browser
(``executable_path``). Without the browser these tests are skipped with the command that enables them.
Every page a test opens is watched: a request to another origin, an uncaught script error or a console
error fails the test (tests/helpers/browser.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelyard.api.app import create_app
from tests.helpers.browser import CHROMIUM, DESKTOP, ENABLE_HINT, Watched, watch
from tests.helpers.live_server import serve_in_thread

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

#: a page (module import, first API answers) renders well within this on a loaded 2-core machine
DEFAULT_TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def _needs_the_browser() -> None:
    """Skip (with the command that enables them) where Chromium or Playwright is missing."""
    if CHROMIUM is None:
        pytest.skip(ENABLE_HINT)
    if sync_playwright is None:
        pytest.skip("the browser tests need Playwright's Python package: pip install -e '.[dev]'")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium refuses its sandbox
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def ui_url(settings, services) -> Iterator[str]:
    """The real app served by uvicorn for this test (its workspace is the test's ``services``)."""
    with serve_in_thread(create_app(settings, services)) as url:
        yield url


@pytest.fixture
def new_page(browser: Any, ui_url: str) -> Iterator[Callable[..., Watched]]:
    """``new_page(viewport=DESKTOP, color_scheme="light") -> Watched``; each checked for foreign requests and errors."""
    contexts: list[Any] = []
    pages: list[Watched] = []

    def make(viewport: dict[str, int] = DESKTOP, color_scheme: str = "light") -> Watched:
        context = browser.new_context(viewport=viewport, color_scheme=color_scheme, base_url=ui_url, accept_downloads=True)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        watched = watch(context.new_page(), ui_url)
        pages.append(watched)
        return watched

    yield make
    for context in contexts:
        context.close()
    for watched in pages:
        assert watched.foreign_requests() == [], "the UI must not load anything from another origin"
        assert watched.errors == [], "the page logged script errors"


@pytest.fixture
def page(new_page: Callable[..., Watched]) -> Any:
    """A desktop-sized (1280x800), light-scheme page on the test's server."""
    return new_page().page
