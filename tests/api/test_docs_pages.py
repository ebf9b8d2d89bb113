"""The documentation pages load everything from this server (they work offline), under a strict CSP."""

from __future__ import annotations

import re

import pytest

from modelyard.api.docs_pages import VENDOR_DIR

PAGES = ("/schema/swagger", "/schema/rapidoc")


def _references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("page", PAGES)
def test_a_docs_page_and_every_asset_it_references_come_from_this_server(client, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    references = _references(response.text)
    assert references, "the page references its scripts"
    for url in references:
        assert url.startswith("/schema/assets/"), f"{page} loads {url} from elsewhere"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 10_000, url  # the real bundle, not an error page
        assert asset.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript", "text/css")
    assert "cdn" not in response.text.lower() and "unpkg" not in response.text.lower()


@pytest.mark.parametrize("page", PAGES)
def test_docs_pages_forbid_other_origins(client, page: str) -> None:
    policy = client.get(page).headers["content-security-policy"]
    assert "default-src 'self'" in policy and "font-src 'self'" in policy and "connect-src 'self'" in policy


def test_the_vendored_packages_keep_their_licences() -> None:
    for folder in VENDOR_DIR.iterdir():
        assert any(path.name.upper().startswith("LICENSE") for path in folder.iterdir()), folder.name


@pytest.mark.parametrize("path", [
    "/schema/assets/../../core/errors.py",
    "/schema/assets/%2e%2e/%2e%2e/pyproject.toml",
    "/schema/assets/..%2f..%2fapp.py",
    "/schema/assets/swagger-ui-dist-5.18.2/../../docs_pages.py",
    "/schema/assets/%00",
])
def test_asset_paths_never_leave_the_vendor_folder(client, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (400, 404), (path, response.status_code)
    assert b"import" not in response.content
