"""The UI is served by the API server at ``/``, loads nothing from elsewhere, and works with the security model."""

from __future__ import annotations

import httpx
import pytest

from modelyard.api.app import create_app
from modelyard.api.web_ui import UI_CSP, ui_files
from tests.helpers.browser import PHONE, open_view, screenshot
from tests.helpers.live_server import serve_in_thread

#: every top-level view; project views are covered with a project in the page tests
GLOBAL_VIEWS = {"/": "Projects", "/system": "System"}


def test_the_shell_and_every_asset_carry_the_csp_and_need_no_token(ui_url: str) -> None:
    with httpx.Client(base_url=ui_url) as http:
        shell = http.get("/")
        assert shell.status_code == 200 and "text/html" in shell.headers["content-type"]
        assert shell.headers["content-security-policy"] == UI_CSP
        assert "default-src 'self'" in UI_CSP and "'unsafe-inline'" not in UI_CSP and "'unsafe-eval'" not in UI_CSP
        assert "<script>" not in shell.text and "style=" not in shell.text  # no inline script or style to allow
        for name in ui_files():
            if name == "index.html":
                continue
            asset = http.get(f"/ui/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-security-policy"] == UI_CSP
            assert asset.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/ui/../api/app.py", "/ui/%2e%2e/web_ui.py", "/ui/index.html", "/ui/nope.js",
                                  "/ui/js/../../web_ui.py", "/ui/" + "a" * 300])
def test_only_shipped_files_are_served(ui_url: str, path: str) -> None:
    response = httpx.get(ui_url + path)
    assert response.status_code in (404, 422)  # no path is built from the URL: names are looked up
    assert response.json()["status"] == "error"


def test_the_ui_is_refused_to_a_foreign_host_like_the_api(ui_url: str) -> None:
    response = httpx.get(ui_url + "/", headers={"Host": "evil.example"})
    assert response.status_code == 403


def test_global_pages_render_without_foreign_requests(new_page) -> None:
    for scheme in ("light", "dark"):
        watched = new_page(color_scheme=scheme)
        for route, heading in GLOBAL_VIEWS.items():
            open_view(watched.page, route)
            assert watched.page.locator("main h1").first.inner_text() == heading
            screenshot(watched.page, f"{'projects' if route == '/' else route.strip('/')}-{scheme}")
        assert any(url.endswith("/ui/js/app.js") for url in watched.requests)
        assert watched.foreign_requests() == []


def test_the_projects_page_fits_a_phone_screen(new_page) -> None:
    watched = new_page(viewport=PHONE)
    open_view(watched.page, "/")
    overflow = watched.page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, "nothing may force sideways scrolling at 390 px"
    screenshot(watched.page, "projects-phone")


def test_with_a_token_the_page_asks_once_and_sends_it_only_in_a_header(settings, services, browser) -> None:
    settings.api_token = "s3cret-token-value"
    with serve_in_thread(create_app(settings, services)) as url:
        context = browser.new_context(base_url=url)
        try:
            page = context.new_page()
            sent: list[tuple[str, str | None]] = []
            page.on("request", lambda request: sent.append((request.url, request.headers.get("authorization"))))
            page.goto("/#/")
            dialog = page.locator("#token-dialog")
            dialog.get_by_label("Token").fill("wrong")
            dialog.get_by_role("button", name="Use token").click()
            page.locator("#token-error").wait_for(state="visible")  # refused: asked again, saying why
            dialog.get_by_label("Token").fill("s3cret-token-value")
            dialog.get_by_role("button", name="Use token").click()
            page.get_by_role("heading", name="Projects", exact=True).first.wait_for()
            page.wait_for_function("() => Boolean(document.getElementById('view').dataset.ready)")
            api_calls = [(u, a) for u, a in sent if "/api/" in u]
            assert api_calls and api_calls[-1][1] == "Bearer s3cret-token-value"
            assert all("s3cret" not in u for u, _ in sent), "the token never goes into a URL"
            assert "s3cret" not in page.content(), "nor into the page"
            page.reload()  # asked once: a reload keeps it
            page.wait_for_function("() => Boolean(document.getElementById('view').dataset.ready)")
            assert not page.locator("#token-dialog").is_visible()
        finally:
            context.close()
