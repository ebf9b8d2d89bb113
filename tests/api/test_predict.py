"""``/api/predict`` (DESIGN section 12) on a real tiny trained run: models, answers, limits and hostile input."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modelyard.api.app import create_app
from tests.conftest import BASE_URL, assert_error
from tests.core.datasets.factories import image_bytes, png_claiming
from tests.helpers.run_fixtures import wait_for

WORKER_TIMEOUT_S = 120
BOUNDARY = "modelyard-test-boundary"


def load(client, run, **body) -> dict:
    response = client.post(f"/api/predict/{run.project_id}/models", json={"run_id": run.run_id, **body})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def dataset_files(services, run, count: int | None = None) -> list[tuple[str, bytes]]:
    images = services.workspace.images_dir(run.project_id)
    names = sorted(p.name for p in images.iterdir())[:count]
    return [(name, (images / name).read_bytes()) for name in names]


def predict(client, project_id: str, files: list[tuple[str, bytes]], model_id: str | None = None, **fields):
    url = f"/api/predict/{project_id}" + (f"/models/{model_id}" if model_id else "")
    parts = [("files", (name, data, "image/png")) for name, data in files]
    return client.post(url, files=parts, data={k: str(v) for k, v in fields.items()})


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body written byte by byte (hostile names go on the wire exactly as given)."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode(), {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (directories: -1)."""
    return {p.relative_to(root).as_posix(): (p.lstat().st_size if not p.is_dir() else -1, p.lstat().st_mtime_ns)
            for p in root.rglob("*")}


def top1(result: dict) -> tuple[int, float]:
    best = result["predictions"][0]
    return best["class_id"], best["confidence"]


# -- models ------------------------------------------------------------------------------------

def test_models_are_loaded_listed_made_default_and_unloaded(client, trained_run) -> None:
    project = trained_run.project_id
    first = load(client, trained_run, checkpoint="best")
    assert first["id"].startswith("model-") and first["is_default"] and first["runtime"] == "pytorch"
    assert first["source"] == {"kind": "checkpoint", "run_id": trained_run.run_id, "checkpoint": "best",
                               "experiment_id": trained_run.experiment_id, "device": first["device"]}
    assert first["classes"] == ["circle", "square", "triangle"] and first["task"] == "classification"
    assert first["input_size"] == [16, 16] and first["channels"] == 3 and first["memory_bytes"] > 0
    second = load(client, trained_run, checkpoint="last")
    assert not second["is_default"] and second["source"]["checkpoint"] == "last"

    listed = client.get(f"/api/predict/{project}/models").json()["data"]
    assert [m["id"] for m in listed] == [second["id"], first["id"]]  # most recently used first
    assert client.get(f"/api/predict/{project}/models/{first['id']}").json()["data"]["id"] == first["id"]

    chosen = client.put(f"/api/predict/{project}/default", json={"model_id": second["id"]})
    assert chosen.status_code == 200 and chosen.json()["data"]["is_default"] is True
    assert client.get(f"/api/predict/{project}/models/{first['id']}").json()["data"]["is_default"] is False

    unloaded = client.delete(f"/api/predict/{project}/models/{second['id']}")
    assert unloaded.json() == {"status": "ok", "data": {"id": second["id"], "deleted": True}}
    assert_error(client.get(f"/api/predict/{project}/models/{second['id']}"), 404, "NOT_FOUND")
    assert_error(client.delete(f"/api/predict/{project}/models/{second['id']}"), 404, "NOT_FOUND")
    assert_error(client.put(f"/api/predict/{project}/default", json={"model_id": second["id"]}), 404, "NOT_FOUND")
    # the default was unloaded: predicting without naming a model is a conflict, naming the other one works
    error = assert_error(predict(client, project, [("a.png", image_bytes())]), 409, "CONFLICT")
    assert "no default model" in error["message"]
    assert predict(client, project, [("a.png", image_bytes())], first["id"]).status_code == 200


@pytest.mark.parametrize("body, field", [
    ({}, "run_id"),
    ({"run_id": "run-00000000", "export_id": "export-00000000"}, "run_id"),
    ({"run_id": "run-00000000", "colour": "red"}, "colour"),
    ({"run_id": "run-00000000", "checkpoint": "epoch3"}, "checkpoint"),
    ({"run_id": 7}, "run_id"),
])
def test_a_malformed_load_body_is_422_naming_the_field(client, trained_run, body, field) -> None:
    error = assert_error(client.post(f"/api/predict/{trained_run.project_id}/models", json=body), 422,
                         "VALIDATION_ERROR")
    assert error["details"]["field"] == field


def test_loading_an_unknown_run_or_export_is_404_and_an_unknown_device_422(client, trained_run) -> None:
    url = f"/api/predict/{trained_run.project_id}/models"
    assert_error(client.post(url, json={"run_id": "run-00000000"}), 404, "NOT_FOUND")
    assert_error(client.post(url, json={"export_id": "export-00000000"}), 404, "NOT_FOUND")
    error = assert_error(client.post(url, json={"run_id": trained_run.run_id, "device": "tpu:9"}), 422,
                         "VALIDATION_ERROR")
    assert error["details"]["field"] == "device"
    assert_error(client.put(f"/api/predict/{trained_run.project_id}/default", json={"model_id": "model-00000000",
                                                                                   "x": 1}), 422, "VALIDATION_ERROR")


def test_a_deleted_project_unloads_its_models(client, services, trained_run) -> None:
    load(client, trained_run)
    assert client.delete(f"/api/projects/{trained_run.project_id}").status_code == 200
    assert services.predictions.cache.list(trained_run.project_id) == []


def test_the_models_threads_stop_with_the_server(settings, services, trained_run) -> None:
    from litestar.testing import TestClient

    with TestClient(create_app(settings, services), base_url=BASE_URL) as client:
        model = load(client, trained_run)
        assert any(t.name == f"modelyard-{model['id']}" for t in threading.enumerate())
    assert not any(t.name == f"modelyard-{model['id']}" for t in threading.enumerate())


# -- answers -----------------------------------------------------------------------------------

def test_several_uploads_are_answered_in_order_with_sorted_top_k(client, services, trained_run) -> None:
    model = load(client, trained_run)
    files = dataset_files(services, trained_run, 5)
    response = predict(client, trained_run.project_id, files, top_k=2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok" and set(body["data"]) == {"model_id", "task", "results"}
    assert body["data"]["model_id"] == model["id"] and body["data"]["task"] == "classification"
    results = body["data"]["results"]
    assert [r["filename"] for r in results] == [name for name, _ in files]
    for result in results:
        assert (result["width"], result["height"]) == (20, 20)
        confidences = [p["confidence"] for p in result["predictions"]]
        assert len(confidences) == 2 and confidences == sorted(confidences, reverse=True)
        assert {p["class_name"] for p in result["predictions"]} <= set(model["classes"])
        assert all(model["classes"][p["class_id"]] == p["class_name"] for p in result["predictions"])
    every_class = predict(client, trained_run.project_id, files[:1], model["id"], top_k=3).json()["data"]["results"][0]
    assert sum(p["confidence"] for p in every_class["predictions"]) == pytest.approx(1.0, abs=1e-5)
    info = client.get(f"/api/predict/{trained_run.project_id}/models/{model['id']}").json()["data"]
    assert (info["requests"], info["images"]) == (2, 6)


def _wait(client, url: str, what: str) -> dict:
    def finished():
        data = client.get(url).json()["data"]
        return data if data["status"] in ("completed", "failed") else None

    return wait_for(finished, WORKER_TIMEOUT_S, interval=0.3, what=what)


def test_predictions_equal_the_evaluations_per_image_predictions(client, services, trained_run) -> None:
    project = trained_run.project_id
    created = client.post(f"/api/evaluation/{project}", json={
        "experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "checkpoint": "best",
        "split_index": 0, "split_subset": "test"}).json()["data"]
    done = _wait(client, f"/api/evaluation/{project}/{created['id']}", "the evaluation")
    assert done["status"] == "completed", done["error"]
    rows = client.get(f"/api/evaluation/{project}/{created['id']}/results", params={"page_size": 500}).json()["data"]
    expected = {row["filename"]: row["prediction"] for row in rows["items"]}
    assert len(expected) == 6

    load(client, trained_run, checkpoint="best")
    images = services.workspace.images_dir(project)
    files = [(name, (images / name).read_bytes()) for name in sorted(expected)]
    results = predict(client, project, files, top_k=1).json()["data"]["results"]
    for result in results:
        wanted = expected[result["filename"]]
        class_id, confidence = top1(result)
        assert (class_id, result["predictions"][0]["class_name"]) == (wanted["class_id"], wanted["class_name"])
        assert abs(confidence - wanted["confidence"]) < 1e-5, result["filename"]


def test_an_onnx_export_agrees_with_the_checkpoint_and_a_broken_one_is_a_409(client, services, trained_run) -> None:
    project = trained_run.project_id
    created = client.post(f"/api/export/{project}", json={
        "experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "format": "onnx"}).json()["data"]
    done = _wait(client, f"/api/export/{project}/{created['id']}", "the export")
    assert done["status"] == "completed", done["error"]

    onnx = client.post(f"/api/predict/{project}/models", json={"export_id": created["id"], "device": "cpu"})
    assert onnx.status_code == 201, onnx.text
    onnx_model = onnx.json()["data"]
    assert onnx_model["runtime"] == "onnxruntime" and onnx_model["source"]["kind"] == "export"
    assert onnx_model["source"]["export_id"] == created["id"] and onnx_model["source"]["format"] == "onnx"
    checkpoint = load(client, trained_run, checkpoint="best", device="cpu")
    files = dataset_files(services, trained_run)
    by_onnx = predict(client, project, files, onnx_model["id"], top_k=1).json()["data"]["results"]
    by_torch = predict(client, project, files, checkpoint["id"], top_k=1).json()["data"]["results"]
    assert len(by_onnx) == len(files) == 30
    assert [top1(r)[0] for r in by_onnx] == [top1(r)[0] for r in by_torch]

    # an export runs the forward pass only: no gradients, no Grad-CAM
    refused = client.post(f"/api/predict/{project}/models/{onnx_model['id']}", params={"explain": "gradcam"},
                          files=[("files", files[0] + ("image/png",))])
    assert assert_error(refused, 422, "VALIDATION_ERROR")["details"]["field"] == "explain"

    # the export's file replaced by garbage: a clear 409 with the reason, and the server keeps serving
    (services.workspace.exports_dir(project) / created["id"] / done["file"]["name"]).write_bytes(b"\x00garbage" * 100)
    error = assert_error(client.post(f"/api/predict/{project}/models", json={"export_id": created["id"],
                                                                             "device": "cpu"}), 409, "CONFLICT")
    assert "cannot be loaded" in error["message"] and error["details"]["export_id"] == created["id"]
    assert predict(client, project, files[:2], checkpoint["id"]).status_code == 200
    assert client.get("/api/system/health").status_code == 200


def test_dataset_images_are_answered_by_name_like_uploads(client, services, trained_run) -> None:
    load(client, trained_run)
    files = dataset_files(services, trained_run, 3)
    by_name = client.post(f"/api/predict/{trained_run.project_id}",
                          json={"filenames": [name for name, _ in files], "top_k": 2})
    assert by_name.status_code == 200, by_name.text
    uploaded = predict(client, trained_run.project_id, files, top_k=2)
    assert by_name.json()["data"]["results"] == uploaded.json()["data"]["results"]


@pytest.mark.parametrize("name", ["../../project.json", "../dataset.json", "/etc/passwd", "..\\..\\project.json",
                                  "circle_0000.png\x00.txt", "no-such-image.png", ".thumbs", ""])
def test_a_name_that_is_not_a_dataset_image_is_404(client, trained_run, name: str) -> None:
    load(client, trained_run)
    response = client.post(f"/api/predict/{trained_run.project_id}", json={"filenames": [name]})
    assert_error(response, 404, "NOT_FOUND")
    assert b"root:" not in response.content


# -- hostile input -----------------------------------------------------------------------------

def truncated(fmt: str) -> bytes:
    data = image_bytes(fmt, size=(64, 64), colour=3)
    return data[: len(data) * 2 // 3]  # as the import's validation tests cut them


HOSTILE_IMAGES = [
    ("text.png", b"hello, I am not a picture\n" * 10, "not a recognised image"),
    ("truncated.png", truncated("PNG"), "corrupt or truncated"),
    ("truncated.jpg", truncated("JPEG"), "corrupt or truncated"),
    ("bomb.png", png_claiming(50_000, 50_000), "decompression bomb"),
    ("huge-header.png", png_claiming(2**31 - 1, 2**31 - 1), ""),
    ("drawing.svg", b"<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'/>", "not a recognised image"),
    ("empty.png", b"", "empty"),
    ("image.ppm", image_bytes("PPM"), "not a recognised image"),
]


def test_every_hostile_image_gets_an_error_in_its_place_and_the_others_are_answered(client, trained_run) -> None:
    load(client, trained_run)
    good = ("good.png", image_bytes(size=(20, 20)))
    files = [good, *[(name, data) for name, data, _ in HOSTILE_IMAGES], good]
    response = predict(client, trained_run.project_id, files)
    assert response.status_code == 200, response.text
    results = response.json()["data"]["results"]
    assert [r["filename"] for r in results] == [name for name, _ in files]
    assert results[0]["predictions"] and results[-1]["predictions"] == results[0]["predictions"]
    for (name, _, reason), result in zip(HOSTILE_IMAGES, results[1:-1], strict=True):
        assert "predictions" not in result, name
        assert result["error"]["code"] == "INVALID_IMAGE" and reason in result["error"]["message"], (name, result)
    # the server keeps serving
    assert predict(client, trained_run.project_id, [good]).json()["data"]["results"][0]["predictions"]


def test_an_image_over_the_pixel_limit_is_refused(client, services, trained_run) -> None:
    load(client, trained_run)
    services.settings.max_image_pixels = 30 * 30
    results = predict(client, trained_run.project_id, [("big.png", image_bytes(size=(40, 40))),
                                                       ("small.png", image_bytes(size=(20, 20)))]).json()["data"]["results"]
    assert results[0]["error"]["code"] == "INVALID_IMAGE" and "more than the limit" in results[0]["error"]["message"]
    assert results[1]["predictions"]


HOSTILE_FILENAMES = ["../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini", "a\x00b.png", "x" * 3000 + ".png",
                     "%2e%2e%2fsecret", "名前.png", "<script>alert(1)</script>.png", ""]


def test_hostile_upload_names_are_echoed_and_nothing_is_written(client, trained_run, tmp_path: Path) -> None:
    load(client, trained_run)
    before = tree(tmp_path)
    data = image_bytes(size=(20, 20))
    body, headers = multipart([("files", name, data) for name in HOSTILE_FILENAMES])
    response = client.post(f"/api/predict/{trained_run.project_id}", content=body, headers=headers)
    assert response.status_code == 200, response.text
    results = response.json()["data"]["results"]
    assert [r["filename"] for r in results] == [name[:1024] for name in HOSTILE_FILENAMES]
    assert all(r["predictions"] for r in results)
    assert tree(tmp_path) == before
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("project_id", ["proj-../../etc", "..%2F..%2Fprojects", "PROJ-ABCDEFGH", "proj-abcdefgh%00",
                                        "proj-abcdefgh%0A", "exp-abcdefgh", "proj-00000000"])
def test_hostile_or_unknown_project_ids_are_not_found(client, project_id: str) -> None:
    image = [("a.png", image_bytes())]
    for response in (
        client.get(f"/api/predict/{project_id}/models"),
        client.post(f"/api/predict/{project_id}/models", json={"run_id": "run-00000000"}),
        client.get(f"/api/predict/{project_id}/models/model-00000000"),
        client.delete(f"/api/predict/{project_id}/models/model-00000000"),
        client.put(f"/api/predict/{project_id}/default", json={"model_id": "model-00000000"}),
        predict(client, project_id, image),
        predict(client, project_id, image, "model-00000000"),
    ):
        assert response.status_code == 404, (project_id, response.request.url, response.text)
        assert response.json()["status"] == "error"


@pytest.mark.parametrize("model_id", ["model-../../x", "MODEL-ABCDEFGH", "run-abcdefgh", "model-abcdefgh%00",
                                      "model-abcdefgh%0A", "model-00000000", "model-" + "a" * 20])
def test_hostile_or_unknown_model_ids_are_not_found(client, trained_run, model_id: str) -> None:
    project = trained_run.project_id
    load(client, trained_run)
    for response in (
        client.get(f"/api/predict/{project}/models/{model_id}"),
        client.delete(f"/api/predict/{project}/models/{model_id}"),
        client.put(f"/api/predict/{project}/default", json={"model_id": model_id}),
        predict(client, project, [("a.png", image_bytes())], model_id),
    ):
        assert_error(response, 404, "NOT_FOUND")


# -- limits and malformed requests --------------------------------------------------------------

def test_a_body_over_the_limit_is_413_declared_or_streamed(client, services, trained_run) -> None:
    load(client, trained_run)
    services.settings.predict_max_request_bytes = 4000
    big = [("big.png", image_bytes(size=(200, 200), colour=5) + b"\x00" * 5000)]
    error = assert_error(predict(client, trained_run.project_id, big), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit"] == 4000
    body, headers = multipart([("files", "big.png", b"\x00" * 8000)])

    def chunks():  # no Content-Length: the server counts what it receives
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    assert_error(client.post(f"/api/predict/{trained_run.project_id}", content=chunks(), headers=headers), 413,
                 "PAYLOAD_TOO_LARGE")
    names = {"filenames": ["circle_0000.png"] * 400}
    assert_error(client.post(f"/api/predict/{trained_run.project_id}", json=names), 413, "PAYLOAD_TOO_LARGE")
    assert predict(client, trained_run.project_id, [("a.png", image_bytes())]).status_code == 200


def test_too_many_images_is_413_and_none_is_422(client, services, trained_run) -> None:
    load(client, trained_run)
    services.settings.predict_max_files = 2
    three = [(f"{i}.png", image_bytes()) for i in range(3)]
    error = assert_error(predict(client, trained_run.project_id, three), 413, "PAYLOAD_TOO_LARGE")
    assert error["details"]["limit"] == 2
    names = [name for name, _ in dataset_files(services, trained_run, 3)]
    assert_error(client.post(f"/api/predict/{trained_run.project_id}", json={"filenames": names}), 413,
                 "PAYLOAD_TOO_LARGE")
    assert predict(client, trained_run.project_id, three[:2]).status_code == 200

    body, headers = multipart([("top_k", None, b"2")])
    error = assert_error(client.post(f"/api/predict/{trained_run.project_id}", content=body, headers=headers), 422,
                         "VALIDATION_ERROR")
    assert error["details"]["field"] == "files"
    error = assert_error(client.post(f"/api/predict/{trained_run.project_id}", json={"filenames": []}), 422,
                         "VALIDATION_ERROR")
    assert error["details"]["field"] == "filenames"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "image/png",
                                          "multipart/form-data", "application/xml", None])
def test_a_body_that_is_neither_multipart_nor_json_is_415(client, trained_run, content_type) -> None:
    load(client, trained_run)
    headers = {"content-type": content_type} if content_type else {}
    response = client.post(f"/api/predict/{trained_run.project_id}", content=image_bytes(), headers=headers)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("fields, field", [
    ({"top_k": "abc"}, "top_k"), ({"top_k": "0"}, "top_k"), ({"top_k": "5000"}, "top_k"), ({"top_k": "1.5"}, "top_k"),
    ({"top_k": ""}, "top_k"), ({"score_threshold": "x"}, "score_threshold"), ({"score_threshold": "nan"}, "score_threshold"),
    ({"score_threshold": "1.5"}, "score_threshold"), ({"colour": "red"}, "colour"), ({"top_k": "1" * 100}, "top_k"),
])
def test_malformed_form_fields_are_422_naming_the_field(client, trained_run, fields, field) -> None:
    load(client, trained_run)
    response = predict(client, trained_run.project_id, [("a.png", image_bytes())], **fields)
    assert assert_error(response, 422, "VALIDATION_ERROR")["details"]["field"] == field


@pytest.mark.parametrize("body, status, field", [
    ({"filenames": ["a.png"], "colour": "red"}, 422, "colour"),
    ({"filenames": ["a.png"], "top_k": "two"}, 422, "top_k"),
    ({"filenames": "a.png"}, 422, "filenames"),
    ({}, 422, "filenames"),
    ([], 422, None),
])
def test_a_malformed_json_body_is_422_naming_the_field(client, trained_run, body, status, field) -> None:
    load(client, trained_run)
    error = assert_error(client.post(f"/api/predict/{trained_run.project_id}", json=body), status, "VALIDATION_ERROR")
    if field is not None:
        assert error["details"]["field"] == field
    assert_error(client.post(f"/api/predict/{trained_run.project_id}", content=b"{not json",
                             headers={"content-type": "application/json"}), 400, "BAD_REQUEST")


def test_malformed_multipart_and_a_repeated_field_are_422(client, trained_run) -> None:
    load(client, trained_run)
    url = f"/api/predict/{trained_run.project_id}"
    _, headers = multipart([])
    assert_error(client.post(url, content=b"--nothing-like-the-boundary\r\n", headers=headers), 422, "VALIDATION_ERROR")
    body, headers = multipart([("files", "a.png", image_bytes()), ("top_k", None, b"1"), ("top_k", None, b"2")])
    assert_error(client.post(url, content=body, headers=headers), 422, "VALIDATION_ERROR")
    body, headers = multipart([("files", "a" * 5000 + ".png", image_bytes())])  # a header beyond the parser's limit
    assert_error(client.post(url, content=body, headers=headers), 422, "VALIDATION_ERROR")
    body, headers = multipart([("files", None, image_bytes())])  # a text field, not a file
    assert assert_error(client.post(url, content=body, headers=headers), 422,
                        "VALIDATION_ERROR")["details"]["field"] == "files"


def test_gradcam_explains_the_top_class_of_each_usable_image_of_a_checkpoint(client, trained_run) -> None:
    import base64
    import io

    from PIL import Image

    load(client, trained_run)
    response = client.post(f"/api/predict/{trained_run.project_id}", params={"explain": "gradcam"},
                           files=[("files", ("a.png", image_bytes(size=(20, 20)), "image/png")),
                                  ("files", ("b.png", b"not an image", "image/png"))])
    assert response.status_code == 200, response.text
    answered, refused = response.json()["data"]["results"]
    explanation = answered["explanation"]
    assert explanation["method"] == "gradcam" and explanation["class_id"] == answered["predictions"][0]["class_id"]
    assert explanation["media_type"] == "image/png" and (explanation["width"], explanation["height"]) == (16, 16)
    with Image.open(io.BytesIO(base64.b64decode(explanation["png_base64"]))) as heat_map:
        assert heat_map.format == "PNG" and heat_map.size == (16, 16)
    assert refused["error"]["code"] == "INVALID_IMAGE" and "explanation" not in refused


def test_an_unknown_explain_method_is_422(client, trained_run) -> None:
    load(client, trained_run)
    response = client.post(f"/api/predict/{trained_run.project_id}", params={"explain": "lime"},
                           files=[("files", ("a.png", image_bytes(), "image/png"))])
    assert_error(response, 422, "VALIDATION_ERROR")
