"""Plugin listings over HTTP: ``/api/system/plugins``, ``/api/export/formats``, ``/api/training/models``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

import modelyard
from modelyard.api.app import create_app
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from tests.conftest import BASE_URL, assert_error


def _client_for(settings: Settings, host: PluginHost) -> TestClient:  # type: ignore[type-arg]
    return TestClient(create_app(settings, build_services(settings, plugins=host)), base_url=BASE_URL)


@pytest.fixture
def example_client(example_plugin_installed, settings: Settings) -> Iterator[TestClient]:  # type: ignore[no-untyped-def, type-arg]
    """A server whose plugin host found the installed example plugin through its entry point."""
    with _client_for(settings, PluginHost().load_all()) as client:
        yield client


def _by(items: list[dict], key: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {item[key]: item for item in items}


def test_plugins_endpoint_lists_builtins_with_version_source_and_registrations(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/system/plugins")
    assert response.status_code == 200
    plugins = _by(response.json()["data"], "name")
    assert plugins["simple_cnn"] == {
        "name": "simple_cnn",
        "version": modelyard.__version__,
        "source": "builtin",
        "status": "loaded",
        "registered": {"tasks": [], "architectures": ["simple_cnn"], "importers": [], "exporters": []},
        "error": None,
    }
    assert plugins["onnx_exporter"]["registered"]["exporters"] == ["onnx"]
    assert "resnet18" in plugins["torchvision_models"]["registered"]["architectures"]
    assert plugins["classification"]["registered"]["tasks"] == ["classification"]


def test_export_formats_are_enumerated_from_the_exporter_registry_with_option_defaults(client) -> None:  # type: ignore[no-untyped-def]
    formats = _by(client.get("/api/export/formats").json()["data"], "id")
    assert set(formats) >= {"onnx", "torchscript"}
    onnx = formats["onnx"]
    assert (onnx["name"], onnx["extension"], onnx["plugin"]) == ("ONNX", ".onnx", "onnx_exporter")
    defaults = {name: prop["default"] for name, prop in onnx["options"]["properties"].items()}
    assert defaults == {
        "opset_version": 17,
        "input_shape": None,
        "dynamic_axes": {"input": {"0": "batch_size"}, "output": {"0": "batch_size"}},
        "simplify": True,
        "fp16": False,
    }
    assert formats["torchscript"]["extension"] == ".pt"


def test_export_formats_route_wins_over_the_project_export_routes(app, client) -> None:  # type: ignore[no-untyped-def]
    project_routes = [route.path for route in app.routes if route.path.startswith("/api/export/{")]
    assert project_routes, "the /api/export/{project_id} controller is expected beside /api/export/formats"
    response = client.get("/api/export/formats")
    assert response.status_code == 200 and isinstance(response.json()["data"], list)


def test_models_endpoint_lists_architectures_with_their_facts(client) -> None:  # type: ignore[no-untyped-def]
    models = _by(client.get("/api/training/models").json()["data"], "name")
    assert models["resnet18"] == {
        "name": "resnet18",
        "tasks": ["classification"],
        "plugin": "torchvision_models",
        "default_input_size": [224, 224],
        "has_pretrained": True,
        "num_parameters": 11_689_512,
        "description": models["resnet18"]["description"],
    }
    simple = models["simple_cnn"]
    assert (simple["plugin"], simple["has_pretrained"], simple["default_input_size"]) == ("simple_cnn", False, [32, 32])
    assert 0 < simple["num_parameters"] < 1_000_000  # counted on the meta device, not declared
    assert len(models) >= 81


def test_get_one_model_by_name(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/training/models/inception_v3")
    assert response.status_code == 200
    assert response.json()["data"]["default_input_size"] == [299, 299]


def test_unknown_architecture_is_a_404_listing_the_available_names(client) -> None:  # type: ignore[no-untyped-def]
    # 404, not 422: the name addresses a resource (found by schema fuzzing, tests/reliability/test_schema_fuzz.py)
    error = assert_error(client.get("/api/training/models/resnet9000"), 404, "NOT_FOUND")
    assert error["message"].startswith("Unknown architecture 'resnet9000'. Did you mean 'resnet50' or ")
    assert "? Available: alexnet, convnext_base" in error["message"]
    assert error["details"]["suggestions"][0] == "resnet50"
    assert error["details"]["field"] == "name"
    assert error["details"]["name"] == "resnet9000"
    assert {"simple_cnn", "resnet18"} <= set(error["details"]["available"])


@pytest.mark.parametrize("name", ["..%2F..%2Fetc%2Fpasswd", "%00", "simple_cnn%0A", "x" * 201, "%2E%2E"])
def test_hostile_model_names_are_4xx_envelopes(client, name: str) -> None:  # type: ignore[no-untyped-def]
    response = client.get(f"/api/training/models/{name}")
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["status"] == "error"
    assert "Traceback" not in response.text


def test_openapi_documents_the_plugin_endpoints(client) -> None:  # type: ignore[no-untyped-def]
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert paths["/api/system/plugins"]["get"]["operationId"] == "ListPlugins"
    assert paths["/api/export/formats"]["get"]["operationId"] == "ListExportFormats"
    assert paths["/api/training/models"]["get"]["operationId"] == "ListModels"
    assert paths["/api/training/models/{name}"]["get"]["operationId"] == "GetModel"


def test_installed_third_party_plugin_shows_up_in_all_three_listings(example_client) -> None:  # type: ignore[no-untyped-def]
    plugins = _by(example_client.get("/api/system/plugins").json()["data"], "name")
    assert plugins["example"] == {
        "name": "example",
        "version": "0.3.0",
        "source": "modelyard-example-plugin",
        "status": "loaded",
        "registered": {"tasks": [], "architectures": ["example_tiny"], "importers": ["example_txt"], "exporters": ["example_ts"]},
        "error": None,
    }
    models = _by(example_client.get("/api/training/models").json()["data"], "name")
    assert models["example_tiny"]["plugin"] == "example"
    assert models["example_tiny"]["default_input_size"] == [16, 16]
    assert models["example_tiny"]["num_parameters"] == 8 * 3 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 1000 + 1000
    formats = _by(example_client.get("/api/export/formats").json()["data"], "id")
    assert formats["example_ts"]["extension"] == ".ts"
    importers = _by(example_client.get("/api/datasets/formats").json()["data"], "id")
    assert importers["example_txt"]["plugin"] == "example" and importers["example_txt"]["tasks"] == ["classification"]
    assert formats["example_ts"]["options"]["properties"]["note"]["default"] == ""


def test_disabling_the_third_party_plugin_by_name_removes_it_from_the_listings(
    example_plugin_installed, settings: Settings, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("MODELYARD_DISABLE_PLUGINS", "example")
    with _client_for(settings, PluginHost().load_all()) as client:
        plugins = _by(client.get("/api/system/plugins").json()["data"], "name")
        assert plugins["example"]["status"] == "disabled"
        assert plugins["example"]["registered"] == {"tasks": [], "architectures": [], "importers": [], "exporters": []}
        assert "example_tiny" not in _by(client.get("/api/training/models").json()["data"], "name")
        assert "example_ts" not in _by(client.get("/api/export/formats").json()["data"], "id")
        assert_error(client.get("/api/training/models/example_tiny"), 404, "NOT_FOUND")


def test_server_starts_and_reports_a_plugin_that_fails_to_load(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    dist_info = site / "exploding-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: exploding\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[modelyard]\nexploding = exploding_plugin\n")
    (site / "exploding_plugin.py").write_text("raise ImportError('needs libfoo.so')\n")
    monkeypatch.syspath_prepend(str(site))
    with _client_for(settings, PluginHost().load_all()) as client:
        assert client.get("/api/system/health").status_code == 200
        plugins = _by(client.get("/api/system/plugins").json()["data"], "name")
        assert plugins["exploding"]["status"] == "failed"
        assert plugins["exploding"]["error"] == "ImportError: needs libfoo.so"
        assert plugins["exploding"]["source"] == "exploding"
        assert client.get("/api/training/models/simple_cnn").status_code == 200


def test_models_and_formats_filter_by_a_registered_task_and_say_which_tasks_they_serve(client, second_task) -> None:  # type: ignore[no-untyped-def]
    everything = client.get("/api/training/models").json()["data"]
    classification = client.get("/api/training/models", params={"task": "classification"}).json()["data"]
    detection = client.get("/api/training/models", params={"task": "object_detection"}).json()["data"]
    assert classification == [m for m in everything if "classification" in m["tasks"]]
    assert detection == [m for m in everything if "object_detection" in m["tasks"]]
    assert {"resnet18", "simple_cnn"} <= {m["name"] for m in classification}
    assert {"simple_detector", "fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "fcos_resnet50_fpn",
            "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"} <= {m["name"] for m in detection}
    assert len(classification) + len(detection) == len(everything)  # every built-in model serves one of the two
    assert client.get("/api/training/models", params={"task": second_task}).json()["data"] == []
    formats = client.get("/api/export/formats", params={"task": "classification"}).json()["data"]
    assert {f["id"] for f in formats} >= {"onnx", "torchscript"} and all("classification" in f["tasks"] for f in formats)
    builtin = {f["id"]: f["tasks"] for f in formats if f["id"] in ("onnx", "torchscript")}
    assert builtin == {"onnx": ["classification", "object_detection"], "torchscript": ["classification", "object_detection"]}
    assert client.get("/api/export/formats", params={"task": second_task}).json()["data"] == []


@pytest.mark.parametrize("path", ["/api/training/models", "/api/export/formats", "/api/datasets/formats"])
@pytest.mark.parametrize("task", ["segmentation", ""])
def test_a_task_nothing_serves_lists_nothing(client, path: str, task: str) -> None:  # type: ignore[no-untyped-def]
    response = client.get(path, params={"task": task})
    assert response.status_code == 200 and response.json()["data"] == []


def test_dataset_formats_list_every_importer_with_its_tasks_and_filter_by_task(client, second_task) -> None:  # type: ignore[no-untyped-def]
    formats = _by(client.get("/api/datasets/formats").json()["data"], "id")
    assert {"imagefolder", "csv"} <= set(formats)
    assert formats["imagefolder"]["tasks"] == ["classification"] and formats["imagefolder"]["plugin"] == "imagefolder"
    assert formats["imagefolder"]["description"]
    classification = {key: value for key, value in formats.items() if "classification" in value["tasks"]}
    assert _by(client.get("/api/datasets/formats", params={"task": "classification"}).json()["data"], "id") == classification
    detection = _by(client.get("/api/datasets/formats", params={"task": "object_detection"}).json()["data"], "id")
    assert set(detection) == {"coco", "voc", "yolo"} and {"coco", "voc", "yolo"}.isdisjoint(classification)
    assert client.get("/api/datasets/formats", params={"task": second_task}).json()["data"] == []
