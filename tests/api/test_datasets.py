"""Datasets API (reference section 2): import, describe, list, serve and clear."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient
from PIL import Image

from modelyard.api.app import create_app
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from tests.conftest import BASE_URL, assert_error
from tests.core.datasets.factories import image_bytes, shapes_folder, write, zip_bytes, zip_of_folder


def import_local(client, project_id: str, path: Path, **body: object):
    return client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(path), **body})


def upload(client, project_id: str, archive: bytes, **fields: str):
    return client.post(f"/api/datasets/{project_id}/import/upload", files={"file": ("data.zip", archive, "application/zip")},
                       data=fields)


@pytest.fixture
def shapes(import_root: Path) -> Path:
    """4 classes x 3 images, 16 px."""
    return shapes_folder(import_root / "shapes", per_class=3, shapes=("circle", "square", "star", "triangle"))


@pytest.fixture
def imported(client, project_id: str, shapes: Path) -> str:
    response = import_local(client, project_id, shapes)
    assert response.status_code == 200, response.text
    return project_id


def test_empty_project_has_an_empty_dataset(client, project_id: str) -> None:
    response = client.get(f"/api/datasets/{project_id}")
    assert response.status_code == 200
    assert response.json()["data"] == {
        "task": "classification", "classes": [], "class_counts": {}, "num_images": 0, "num_unlabelled": 0,
        "image_stats": {"num_images": 0, "min_width": None, "max_width": None, "min_height": None, "max_height": None,
                        "formats": []},
        "split_names": [], "source": None,
    }
    listed = client.get(f"/api/datasets/{project_id}/images").json()["data"]
    assert listed == {"items": [], "page": 1, "page_size": 50, "total": 0, "pages": 0}


def test_dataset_of_unknown_project_is_404(client) -> None:
    assert_error(client.get("/api/datasets/proj-00000000"), 404, "NOT_FOUND")
    assert_error(client.get("/api/datasets/not-an-id/images"), 404, "NOT_FOUND")


def test_local_import_answers_with_the_summary(client, project_id: str, shapes: Path) -> None:
    write(shapes / "circle" / "broken.png", b"not an image")
    response = import_local(client, project_id, shapes)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["imported"] == 12 and data["num_images"] == 12 and data["format"] == "imagefolder"
    assert data["classes"] == ["circle", "square", "star", "triangle"]
    assert data["skipped"] == [{"path": "circle/broken.png", "reason": data["skipped"][0]["reason"]}]
    assert "not a recognised image" in data["skipped"][0]["reason"]
    assert data["duplicates"] == []
    info = client.get(f"/api/datasets/{project_id}").json()["data"]
    assert info["class_counts"] == {"circle": 3, "square": 3, "star": 3, "triangle": 3}
    assert info["source"]["kind"] == "local" and info["image_stats"]["max_width"] == 16


def test_csv_import_with_explicit_format(client, project_id: str, import_root: Path) -> None:
    folder = import_root / "csvset"
    write(folder / "images" / "1.png", image_bytes(colour=1))
    write(folder / "images" / "2.png", image_bytes(colour=2))
    (folder / "labels.csv").write_text("filename,label,split\nimages/1.png,cat,train\nimages/2.png,,\n", encoding="utf-8")
    data = import_local(client, project_id, folder, format="csv").json()["data"]
    assert (data["imported"], data["classes"], data["format"]) == (2, ["cat"], "csv")
    assert client.get(f"/api/datasets/{project_id}").json()["data"]["split_names"] == ["source"]


def test_unknown_format_lists_the_available_ones(client, project_id: str, shapes: Path) -> None:
    error = assert_error(import_local(client, project_id, shapes, format="coco"), 422, "VALIDATION_ERROR")
    assert {"csv", "imagefolder"} <= set(error["details"]["available"])


def test_unknown_body_fields_are_rejected(client, project_id: str, shapes: Path) -> None:
    assert_error(import_local(client, project_id, shapes, recursive=True), 422, "VALIDATION_ERROR")


def test_non_upload_routes_keep_the_small_body_limit(workspace_dir: Path, import_root: Path) -> None:
    settings = Settings(workspace=workspace_dir, import_roots=[import_root], max_request_bytes=1000)
    with TestClient(create_app(settings, build_services(settings)), base_url=BASE_URL) as client:
        project_id = client.post("/api/projects", json={"name": "p"}).json()["data"]["id"]
        assert_error(import_local(client, project_id, import_root / ("x" * 2000)), 413, "PAYLOAD_TOO_LARGE")
        folder = shapes_folder(import_root / "s", per_class=30, shapes=("circle",))
        archive = zip_of_folder(folder)
        assert len(archive) > 1000
        assert upload(client, project_id, archive).status_code == 200


# -- listing ------------------------------------------------------------------

def names(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["filename"] for item in response.json()["data"]["items"]]


def test_list_items_carry_the_documented_fields(client, imported: str) -> None:
    item = client.get(f"/api/datasets/{imported}/images", params={"page_size": 1}).json()["data"]["items"][0]
    assert item == {"filename": "circle_0000.png", "class_name": "circle", "width": 16, "height": 16,
                    "size": item["size"], "format": "png", "source_path": "circle/circle_0000.png", "split": []}


def test_pagination_pages_and_out_of_range(client, imported: str) -> None:
    first = client.get(f"/api/datasets/{imported}/images", params={"page": 1, "page_size": 5}).json()["data"]
    assert (first["total"], first["pages"], len(first["items"])) == (12, 3, 5)
    last = client.get(f"/api/datasets/{imported}/images", params={"page": 3, "page_size": 5}).json()["data"]
    assert len(last["items"]) == 2
    beyond = client.get(f"/api/datasets/{imported}/images", params={"page": 9, "page_size": 5}).json()["data"]
    assert beyond["items"] == [] and beyond["total"] == 12
    capped = client.get(f"/api/datasets/{imported}/images", params={"page_size": 100000}).json()["data"]
    assert capped["page_size"] == 500


@pytest.mark.parametrize("params", [{"page": 0}, {"page_size": 0}, {"sort_by": "date"}, {"sort_order": "up"},
                                    {"filter_split": "x"}, {"filter_split": "0:train"}, {"page": "two"}])
def test_invalid_list_parameters_are_422(client, imported: str, params: dict) -> None:
    assert_error(client.get(f"/api/datasets/{imported}/images", params=params), 422, "VALIDATION_ERROR")


def test_sorting_by_filename_class_and_size(client, imported: str) -> None:
    by_name = names(client.get(f"/api/datasets/{imported}/images", params={"page_size": 500}))
    assert by_name == sorted(by_name)
    desc = names(client.get(f"/api/datasets/{imported}/images", params={"page_size": 500, "sort_order": "desc"}))
    assert desc == by_name[::-1]
    items = client.get(f"/api/datasets/{imported}/images",
                       params={"page_size": 500, "sort_by": "size"}).json()["data"]["items"]
    assert [i["size"] for i in items] == sorted(i["size"] for i in items)
    classes = client.get(f"/api/datasets/{imported}/images",
                         params={"page_size": 500, "sort_by": "class", "sort_order": "desc"}).json()["data"]["items"]
    assert [i["class_name"] for i in classes] == sorted((i["class_name"] for i in classes), reverse=True)


def test_filter_by_class_and_search(client, imported: str) -> None:
    stars = names(client.get(f"/api/datasets/{imported}/images", params={"filter_class": "star"}))
    assert stars == ["star_0000.png", "star_0001.png", "star_0002.png"]
    assert names(client.get(f"/api/datasets/{imported}/images", params={"search": "SQUARE_0001"})) == ["square_0001.png"]
    assert names(client.get(f"/api/datasets/{imported}/images", params={"filter_class": "star", "search": "square"})) == []
    assert names(client.get(f"/api/datasets/{imported}/images", params={"filter_class": "unicorn"})) == []


def test_filter_by_split_subset(client, imported: str) -> None:
    created = client.post(f"/api/splits/{imported}", json={"name": "s", "ratios": {"train": 0.5, "val": 0.5}, "seed": 1})
    assert created.status_code == 201
    train = client.get(f"/api/datasets/{imported}/images", params={"filter_split": "0:train", "page_size": 500})
    val = client.get(f"/api/datasets/{imported}/images", params={"filter_split": "0:val", "page_size": 500})
    assert all(item["split"] == ["train"] for item in train.json()["data"]["items"])
    assert len(names(train)) + len(names(val)) == 12 and set(names(train)).isdisjoint(names(val))
    assert names(client.get(f"/api/datasets/{imported}/images", params={"filter_split": "0:test"})) == []


# -- files ----------------------------------------------------------------------

def test_image_is_served_with_type_nosniff_and_etag(client, imported: str, shapes: Path) -> None:
    response = client.get(f"/api/datasets/{imported}/images/circle_0001.png")
    assert response.status_code == 200
    assert response.content == (shapes / "circle" / "circle_0001.png").read_bytes()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"].startswith("private, max-age=")
    info = client.get(f"/api/datasets/{imported}/images/circle_0001.png/info").json()["data"]
    assert response.headers["etag"] == f'"{info["sha256"]}"'
    again = client.get(f"/api/datasets/{imported}/images/circle_0001.png",
                       headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_jpeg_is_served_as_image_jpeg(client, project_id: str, import_root: Path) -> None:
    write(import_root / "j" / "cat" / "a.jpg", image_bytes("JPEG"))
    import_local(client, project_id, import_root / "j")
    assert client.get(f"/api/datasets/{project_id}/images/cat_a.jpg").headers["content-type"] == "image/jpeg"


def test_thumbnail_is_a_jpeg_with_its_own_etag(client, imported: str) -> None:
    response = client.get(f"/api/datasets/{imported}/thumbnails/star_0002.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"].endswith('-thumb256"')
    with Image.open(io.BytesIO(response.content)) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (16, 16)
    again = client.get(f"/api/datasets/{imported}/thumbnails/star_0002.png",
                       headers={"If-None-Match": f'W/"x", {response.headers["etag"]}'})
    assert again.status_code == 304


def test_info_returns_the_record_with_annotations(client, imported: str) -> None:
    data = client.get(f"/api/datasets/{imported}/images/triangle_0000.png/info").json()["data"]
    assert data["annotations"] == [{"type": "label", "class_id": 3, "class_name": "triangle"}]
    assert data["source_path"] == "triangle/triangle_0000.png" and len(data["sha256"]) == 64


def test_unknown_image_is_404(client, imported: str) -> None:
    for route in ("images/nope.png", "images/nope.png/info", "thumbnails/nope.png"):
        assert_error(client.get(f"/api/datasets/{imported}/{route}"), 404, "NOT_FOUND")


# -- clear ------------------------------------------------------------------------

def test_delete_clears_images_thumbnails_and_dataset_json(client, imported: str, workspace_dir: Path) -> None:
    client.get(f"/api/datasets/{imported}/thumbnails/star_0002.png")
    dataset_dir = workspace_dir / "projects" / imported / "dataset"
    assert (dataset_dir / ".thumbs").is_dir() and (dataset_dir / "dataset.json").is_file()
    response = client.delete(f"/api/datasets/{imported}")
    assert response.status_code == 200 and response.json()["data"] == {"id": imported, "deleted": True}
    assert not dataset_dir.exists()
    assert client.get(f"/api/datasets/{imported}").json()["data"]["num_images"] == 0
    assert_error(client.get(f"/api/datasets/{imported}/images/star_0002.png"), 404, "NOT_FOUND")


@pytest.fixture
def training_run(services, imported: str) -> Iterator[None]:
    """A run of the project that is really running (a live stand-in worker with a heartbeat)."""
    from tests.helpers.run_fixtures import make_run_folder, mark_running, stand_in_worker

    run_dir = make_run_folder(services.workspace, imported, status="pending")
    worker = stand_in_worker(run_dir)
    try:
        mark_running(services.workspace, run_dir, worker)
        yield
    finally:
        worker.kill()
        worker.wait()


def test_delete_and_import_are_409_while_a_run_is_training(client, imported: str, shapes: Path, training_run: None) -> None:
    assert_error(client.delete(f"/api/datasets/{imported}"), 409, "CONFLICT")
    assert_error(import_local(client, imported, shapes), 409, "CONFLICT")
    assert client.get(f"/api/datasets/{imported}").json()["data"]["num_images"] == 12


# -- upload -----------------------------------------------------------------------

def test_zip_upload_under_one_top_folder_imports_it_as_the_root(client, project_id: str, shapes: Path) -> None:
    response = upload(client, project_id, zip_of_folder(shapes, prefix="my_dataset/"))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["imported"] == 12 and data["classes"] == ["circle", "square", "star", "triangle"]
    assert client.get(f"/api/datasets/{project_id}").json()["data"]["source"]["kind"] == "upload"


def test_zip_upload_merges_or_replaces(client, project_id: str, shapes: Path) -> None:
    upload(client, project_id, zip_of_folder(shapes))
    extra = zip_bytes({"dog/d.png": image_bytes(colour=77)})
    assert upload(client, project_id, extra).json()["data"]["num_images"] == 13
    replaced = upload(client, project_id, extra, replace="true").json()["data"]
    assert (replaced["imported"], replaced["num_images"], replaced["classes"]) == (1, 1, ["dog"])


def test_upload_leaves_no_staging_files(client, project_id: str, shapes: Path, workspace_dir: Path) -> None:
    assert upload(client, project_id, zip_of_folder(shapes)).status_code == 200
    assert list((workspace_dir / ".staging").iterdir()) == []


def test_upload_must_be_multipart(client, project_id: str) -> None:
    response = client.post(f"/api/datasets/{project_id}/import/upload", content=b"PK..", headers={"content-type": "application/zip"})
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_upload_needs_the_file_field(client, project_id: str) -> None:
    response = client.post(f"/api/datasets/{project_id}/import/upload", files={"other": ("x.zip", b"PK", "application/zip")})
    assert_error(response, 422, "VALIDATION_ERROR")
    response = client.post(f"/api/datasets/{project_id}/import/upload", data={"format": "auto"},
                           files={"unused": ("x.zip", b"", "application/zip")})
    assert_error(response, 422, "VALIDATION_ERROR")


def test_upload_to_unknown_project_is_404(client) -> None:
    assert_error(upload(client, "proj-00000000", zip_bytes({"a.png": image_bytes()})), 404, "NOT_FOUND")


@pytest.fixture
def small_upload_client(workspace_dir: Path, import_root: Path) -> Iterator[TestClient]:
    settings = Settings(workspace=workspace_dir, import_roots=[import_root], max_upload_bytes=50_000)
    with TestClient(create_app(settings, build_services(settings)), base_url=BASE_URL) as client:
        yield client


def test_upload_over_the_limit_is_413_by_declared_length(small_upload_client, import_root: Path) -> None:
    client = small_upload_client
    project_id = client.post("/api/projects", json={"name": "p"}).json()["data"]["id"]
    assert_error(upload(client, project_id, b"\0" * 60_000), 413, "PAYLOAD_TOO_LARGE")


def test_upload_over_the_limit_is_413_when_streamed_without_length(small_upload_client, workspace_dir: Path) -> None:
    client = small_upload_client
    project_id = client.post("/api/projects", json={"name": "p"}).json()["data"]["id"]
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.zip\"\r\n"
            "Content-Type: application/zip\r\n\r\n").encode()

    def body() -> Iterator[bytes]:  # chunked: no Content-Length, so only counting what arrives can stop it
        yield head
        for _ in range(20):
            yield b"\0" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(f"/api/datasets/{project_id}/import/upload", content=body(),
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert list((workspace_dir / ".staging").iterdir()) == []
