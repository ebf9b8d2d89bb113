"""Hostile input to the datasets API: always a 4xx envelope, never a file written outside the workspace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from modelyard.api.app import create_app
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from tests.conftest import BASE_URL, assert_error
from tests.core.datasets.factories import (
    image_bytes,
    many_entries_zip,
    png_claiming,
    shapes_folder,
    write,
    zip_bomb,
    zip_bytes,
    zip_with_symlink,
)


def outside_workspace(tmp_path: Path, workspace_dir: Path) -> dict[str, int]:
    """Every path under the test's temp folder but outside the workspace, with its size (directories: -1)."""
    found = {}
    for path in tmp_path.rglob("*"):
        if path == workspace_dir or workspace_dir in path.parents:
            continue
        found[path.relative_to(tmp_path).as_posix()] = path.lstat().st_size if not path.is_dir() else -1
    return found


@pytest.fixture
def guard(tmp_path: Path, workspace_dir: Path, client) -> Iterator[None]:
    """Fails the test if anything outside the workspace changed, or if staging was left behind."""
    before = outside_workspace(tmp_path, workspace_dir)
    yield
    assert outside_workspace(tmp_path, workspace_dir) == before
    assert list((workspace_dir / ".staging").iterdir()) == []


@pytest.fixture
def imported(client, project_id: str, import_root: Path) -> str:
    shapes_folder(import_root / "shapes", per_class=2, shapes=("circle", "square"))
    response = client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(import_root / "shapes")})
    assert response.status_code == 200, response.text
    return project_id


def upload(client, project_id: str, archive: bytes):
    return client.post(f"/api/datasets/{project_id}/import/upload", files={"file": ("data.zip", archive, "application/zip")})


# -- names in URLs ------------------------------------------------------------------

TRAVERSALS = [
    "..%2f..%2fproject.json",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fproject.json",
    "%252e%252e%252fproject.json",
    "..%5c..%5cproject.json",
    "%2fetc%2fpasswd",
    "%2F..%2F..%2Fdataset.json",
    "circle_0000.png%00.txt",
    "%00",
    "%2e%2e",
    ".thumbs",
    "dataset.json",
]


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize("route", ["images/{}", "images/{}/info", "thumbnails/{}"])
def test_traversal_in_image_names_is_a_4xx_envelope(client, imported: str, guard: None, name: str, route: str) -> None:
    response = client.get(f"/api/datasets/{imported}/" + route.format(name))
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code, response.json()["error"]["code"])
    assert b"root:" not in response.content and b'"name": "Test project"' not in response.content


def encoded(name: str) -> str:
    """``name`` as one URL path segment: every reserved character and every dot percent-encoded."""
    from urllib.parse import quote

    return quote(name, safe="").replace(".", "%2E")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=st.one_of(
    st.text(min_size=1, max_size=60).map(encoded),
    st.sampled_from(["circle_0000.png", "square_0001.png"]),
    st.builds(lambda prefix, rest: prefix + encoded(rest),
              st.sampled_from(["..%2f", "..%2F", "%2e%2e%2f", "%252e%252e%252f", "..%5c", "%2f", "%00", "%2e%2e"]),
              st.text(max_size=20)),
))
def test_image_endpoint_serves_only_files_of_the_dataset(client, imported: str, workspace_dir: Path, segment: str) -> None:
    from urllib.parse import unquote

    response = client.get(f"/api/datasets/{imported}/images/{segment}")
    images = workspace_dir / "projects" / imported / "dataset" / "images"
    if unquote(segment).strip("/") == "":  # the server collapses ".../images//" into the listing route
        assert response.status_code == 200 and response.json()["data"]["total"] == 4
    elif response.status_code == 200:
        assert response.headers["content-type"] == "image/png"
        assert response.content in {p.read_bytes() for p in images.iterdir()}
    else:
        assert response.status_code in (404, 422), response.text
        assert response.json()["status"] == "error"


# -- local import ------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/etc", "~", "/", "~/..", "/proc/self/root/etc"])
def test_local_import_outside_the_roots_is_forbidden(client, project_id: str, guard: None, path: str) -> None:
    response = client.post(f"/api/datasets/{project_id}/import/local", json={"path": path})
    assert_error(response, 403, "FORBIDDEN")


def test_local_import_through_a_symlink_out_of_a_root_is_forbidden(client, project_id: str, import_root: Path,
                                                                  tmp_path: Path, workspace_dir: Path) -> None:
    shapes_folder(tmp_path / "private", per_class=1, shapes=("circle",))
    os.symlink(tmp_path / "private", import_root / "innocent")
    before = outside_workspace(tmp_path, workspace_dir)
    response = client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(import_root / "innocent")})
    assert_error(response, 403, "FORBIDDEN")
    assert outside_workspace(tmp_path, workspace_dir) == before
    assert not (workspace_dir / "projects" / project_id / "dataset").exists()


def test_local_import_is_forbidden_when_no_roots_are_configured(workspace_dir: Path, import_root: Path) -> None:
    settings_ = Settings(workspace=workspace_dir)
    with TestClient(create_app(settings_, build_services(settings_)), base_url=BASE_URL) as client:
        project_id = client.post("/api/projects", json={"name": "p"}).json()["data"]["id"]
        shapes_folder(import_root / "s", per_class=1, shapes=("circle",))
        response = client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(import_root / "s")})
        assert_error(response, 403, "FORBIDDEN")


@pytest.mark.parametrize("path", ["relative/dir", "", "/tmp/\u0000x"])
def test_local_import_with_a_malformed_path_is_422(client, project_id: str, path: str, guard: None) -> None:
    assert_error(client.post(f"/api/datasets/{project_id}/import/local", json={"path": path}), 422, "VALIDATION_ERROR")


def test_folder_of_only_bad_files_is_422_listing_why(client, project_id: str, import_root: Path, tmp_path: Path,
                                                     workspace_dir: Path) -> None:
    write(import_root / "bad" / "cat" / "bomb.png", png_claiming(50_000, 50_000))
    write(import_root / "bad" / "cat" / "text.png", b"I am text pretending to be a PNG\n")
    before = outside_workspace(tmp_path, workspace_dir)
    response = client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(import_root / "bad")})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    reasons = {item["path"]: item["reason"] for item in error["details"]["skipped"]}
    assert "decompression bomb" in reasons["cat/bomb.png"]
    assert "not a recognised image" in reasons["cat/text.png"]
    assert outside_workspace(tmp_path, workspace_dir) == before
    assert not (workspace_dir / "projects" / project_id / "dataset").exists()


# -- uploads ------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["../../x.png", "/abs/x.png", "a\\..\\..\\x.png", "C:/x.png", "ok/../../../x.png"])
def test_zip_slip_upload_is_refused(client, project_id: str, entry: str, guard: None) -> None:
    archive = zip_bytes({"cat/fine.png": image_bytes(), entry: image_bytes(colour=1)})
    error = assert_error(upload(client, project_id, archive), 422, "VALIDATION_ERROR")
    assert error["details"]["entry"] == entry


def test_symlink_entry_upload_is_refused(client, project_id: str, guard: None) -> None:
    archive = zip_with_symlink("cat/evil.png", "/etc/passwd", extra={"cat/fine.png": image_bytes()})
    error = assert_error(upload(client, project_id, archive), 422, "VALIDATION_ERROR")
    assert error["details"]["reason"] == "symbolic link entry"


@pytest.fixture
def limited(workspace_dir: Path, import_root: Path) -> Iterator[TestClient]:
    settings_ = Settings(workspace=workspace_dir, import_roots=[import_root], zip_max_entries=1000,
                         zip_max_uncompressed_bytes=2 * 1024 * 1024)
    with TestClient(create_app(settings_, build_services(settings_)), base_url=BASE_URL) as client:
        yield client


def test_zip_bomb_upload_is_413(limited, tmp_path: Path, workspace_dir: Path) -> None:
    project_id = limited.post("/api/projects", json={"name": "p"}).json()["data"]["id"]
    before = outside_workspace(tmp_path, workspace_dir)
    assert_error(upload(limited, project_id, zip_bomb(64 * 1024 * 1024)), 413, "PAYLOAD_TOO_LARGE")
    assert outside_workspace(tmp_path, workspace_dir) == before
    assert list((workspace_dir / ".staging").iterdir()) == []


def test_100k_entry_zip_upload_is_413(limited, tmp_path: Path, workspace_dir: Path) -> None:
    project_id = limited.post("/api/projects", json={"name": "p"}).json()["data"]["id"]
    before = outside_workspace(tmp_path, workspace_dir)
    assert_error(upload(limited, project_id, many_entries_zip(100_000)), 413, "PAYLOAD_TOO_LARGE")
    assert outside_workspace(tmp_path, workspace_dir) == before
    assert list((workspace_dir / ".staging").iterdir()) == []


def test_non_zip_upload_is_422(client, project_id: str, guard: None) -> None:
    error = assert_error(upload(client, project_id, image_bytes()), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "file"


def test_zip_of_a_decompression_bomb_png_is_422(client, project_id: str, guard: None) -> None:
    error = assert_error(upload(client, project_id, zip_bytes({"cat/huge.png": png_claiming(50_000, 50_000)})),
                         422, "VALIDATION_ERROR")
    assert "decompression bomb" in error["details"]["skipped"][0]["reason"]


def test_zip_of_a_text_file_named_png_is_422(client, project_id: str, guard: None) -> None:
    error = assert_error(upload(client, project_id, zip_bytes({"cat/a.png": b"plain text"})), 422, "VALIDATION_ERROR")
    assert "not a recognised image" in error["details"]["skipped"][0]["reason"]


def test_hostile_upload_leaves_the_previous_dataset_untouched(client, imported: str, workspace_dir: Path) -> None:
    dataset_json = workspace_dir / "projects" / imported / "dataset" / "dataset.json"
    before = dataset_json.read_bytes()
    assert upload(client, imported, zip_bytes({"ok.png": image_bytes(), "../x.png": b""})).status_code == 422
    assert dataset_json.read_bytes() == before
