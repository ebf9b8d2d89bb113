"""Every page of the UI, with a project that has a dataset, a split and a trained run: nothing is loaded from another
origin, the document carries the CSP, the page renders its heading without a script error, and it fits a phone."""

from __future__ import annotations

import pytest

from modelyard.api.web_ui import UI_CSP
from tests.helpers.browser import PHONE, open_view

#: route (``{p}`` the project, ``{r}`` its run) -> the page's heading (its first <h1> contains this)
PAGES = {
    "/": "Projects",
    "/system": "System",
    "/p/{p}/dataset": "Dataset",
    "/p/{p}/splits": "Splits",
    "/p/{p}/training": "Training",
    "/p/{p}/runs/{r}": "Run",
    "/p/{p}/evaluation": "Evaluation",
    "/p/{p}/export": "Export",
    "/p/{p}/predict": "Predict",
}


def routes(trained_run) -> dict[str, str]:
    return {route.format(p=trained_run.project_id, r=trained_run.run_id): heading for route, heading in PAGES.items()}


def test_every_page_renders_from_this_origin_only_under_the_csp(new_page, trained_run) -> None:
    watched = new_page()
    page = watched.page
    document = page.goto("/")
    assert document is not None and document.headers["content-security-policy"] == UI_CSP
    for route, heading in routes(trained_run).items():
        open_view(page, route)
        title = page.locator("main h1").first.inner_text()
        assert heading.lower() in title.lower(), f"{route} shows {title!r}"
        assert "Something went wrong" not in title
    assert watched.foreign_requests() == []
    assert any("/api/" in url for url in watched.requests)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_fits_a_390px_phone_screen(new_page, trained_run, scheme: str) -> None:
    page = new_page(viewport=PHONE, color_scheme=scheme).page
    for route in routes(trained_run):
        open_view(page, route)
        page.wait_for_load_state("networkidle")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{route} scrolls sideways by {overflow} px at 390 px"


def test_every_control_has_a_label(new_page, trained_run) -> None:
    page = new_page().page
    for route in routes(trained_run):
        open_view(page, route)
        page.wait_for_load_state("networkidle")
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('main input, main select, main textarea, main button')]
            .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !el.getAttribute('aria-labelledby') && !(el.tagName === 'BUTTON' && el.textContent.trim()))
            .map((el) => el.outerHTML.slice(0, 120))""")
        assert unlabelled == [], f"{route}: controls without a label: {unlabelled}"
