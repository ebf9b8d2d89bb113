"""``/api/export`` (reference section 6): jobs with real worker processes, downloads, errors."""

from __future__ import annotations

import copy
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from modelyard.api.exports import content_disposition
from modelyard.core import Exporter, ValidationError, hookimpl
from modelyard.core.export.service import ExportService
from modelyard.core.jobs.foreground import export_or_follow
from modelyard.core.plugin_manager import PluginHost
from modelyard.plugins import onnx_exporter
from tests.conftest import assert_error
from tests.helpers.run_fixtures import wait_for

WORKER_TIMEOUT_S = 120


def _body(run, **overrides):
    return {"experiment_id": run.experiment_id, "run_id": run.run_id, **overrides}


def _wait_finished(client, project_id: str, export_id: str) -> dict:
    def finished():
        data = client.get(f"/api/export/{project_id}/{export_id}").json()["data"]
        return data if data["status"] in ("completed", "failed") else None

    return wait_for(finished, WORKER_TIMEOUT_S, interval=0.3, what=f"export {export_id}")


@pytest.fixture
def pending_only(services) -> None:
    """Exports created in this test stay ``pending``: the queue has no CPU slot to start them in."""
    services.settings.cpu_job_slots = 0


def test_export_runs_in_a_worker_and_downloads_as_the_model_file(client, trained_run, workspace_dir: Path) -> None:
    project = trained_run.project_id
    response = client.post(f"/api/export/{project}", json=_body(trained_run, format="onnx",
                                                                 options={"opset_version": 17, "simplify": True}))
    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert created["status"] == "pending" and created["options"]["opset_version"] == 17
    assert created["options"]["fp16"] is False  # defaults filled in
    done = _wait_finished(client, project, created["id"])
    assert done["status"] == "completed", done["error"]
    assert done["verification"]["passed"] is True and done["verification_failed"] is False
    assert done["metadata"]["classes"] == ["circle", "square", "triangle"]
    assert (workspace_dir / "projects" / project / "exports" / created["id"] / "export.log").is_file()

    download = client.get(f"/api/export/{project}/{created['id']}/download")
    assert download.status_code == 200
    name = f"simple_cnn-{trained_run.run_id}.onnx"
    assert download.headers["content-disposition"] == f"attachment; filename=\"{name}\"; filename*=UTF-8''{name}"
    assert download.headers["x-modelyard-verification"] == "passed"
    assert hashlib.sha256(download.content).hexdigest() == done["file"]["sha256"]

    bundle = client.get(f"/api/export/{project}/{created['id']}/download", params={"bundle": "zip"})
    assert bundle.status_code == 200 and bundle.headers["content-type"] == "application/zip"
    assert 'filename="simple_cnn-' in bundle.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
        assert set(archive.namelist()) == {name, "labels.json", "preprocessing.json", "README.txt"}

    assert [e["id"] for e in client.get(f"/api/export/{project}").json()["data"]] == [created["id"]]
    assert client.delete(f"/api/export/{project}/{created['id']}").status_code == 200
    assert_error(client.get(f"/api/export/{project}/{created['id']}/download"), 404, "NOT_FOUND")


def test_download_of_an_unfinished_export_is_409(client, trained_run, pending_only) -> None:
    created = client.post(f"/api/export/{trained_run.project_id}", json=_body(trained_run)).json()["data"]
    assert created["status"] == "pending"
    assert_error(client.get(f"/api/export/{trained_run.project_id}/{created['id']}/download"), 409, "CONFLICT")
    assert_error(client.get(f"/api/export/{trained_run.project_id}/{created['id']}/download?bundle=zip"), 409, "CONFLICT")


def test_export_formats_route_is_not_shadowed_by_the_project_routes(client) -> None:
    response = client.get("/api/export/formats")
    assert response.status_code == 200, response.text
    ids = {f["id"] for f in response.json()["data"]}
    assert {"onnx", "torchscript"} <= ids


def test_unknown_format_is_422_listing_the_available_ones(client, trained_run) -> None:
    error = assert_error(client.post(f"/api/export/{trained_run.project_id}", json=_body(trained_run, format="tflite")),
                         422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "format" and "onnx" in error["details"]["available"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"opset_version": "17"}, "options.opset_version"),
        ({"simplify": "yes"}, "options.simplify"),
        ({"fp16": 1}, "options.fp16"),
        ({"input_shape": [1, 3, 16]}, "options.input_shape"),
        ({"input_shape": [1, 3, 224, 224]}, "options.input_shape"),
        ({"dynamic_axes": {"input": {"0": 5}}}, "options.dynamic_axes.input.0"),
        ({"quantize": True}, "options.quantize"),
    ],
)
def test_export_option_of_the_wrong_type_is_422_naming_it(client, trained_run, options, field) -> None:
    error = assert_error(client.post(f"/api/export/{trained_run.project_id}", json=_body(trained_run, options=options)),
                         422, "VALIDATION_ERROR")
    assert error["details"]["field"] == field, error


@pytest.mark.parametrize(
    ("overrides", "resource"),
    [({"experiment_id": "exp-00000000"}, "experiment"), ({"run_id": "run-00000000"}, "run"),
     ({"run_id": "../../etc"}, "run"), ({"experiment_id": "exp-../../x"}, "experiment")],
)
def test_unknown_experiment_or_run_is_not_found(client, trained_run, overrides, resource) -> None:
    error = assert_error(client.post(f"/api/export/{trained_run.project_id}", json=_body(trained_run, **overrides)),
                         404, "NOT_FOUND")
    assert error["details"]["resource"] == resource


def test_missing_checkpoint_is_409_and_unknown_checkpoint_name_is_422(client, trained_run) -> None:
    (trained_run.run_dir / "checkpoints" / "best.ckpt").unlink()
    error = assert_error(client.post(f"/api/export/{trained_run.project_id}", json=_body(trained_run)), 409, "CONFLICT")
    assert error["details"]["resource"] == "checkpoint"
    assert_error(client.post(f"/api/export/{trained_run.project_id}", json=_body(trained_run, checkpoint="epoch3")),
                 422, "VALIDATION_ERROR")
    assert_error(client.post(f"/api/export/{trained_run.project_id}", json=_body(trained_run, extra=1)),
                 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "export_id",
    ["export-../../etc", "..%2F..%2Fproject.json", "export-ABCDEFGH", "export-abcdefgh%00", "eval-abcdefgh",
     "export-abcdefgh%0A", "%2e%2e"],
)
def test_hostile_export_ids_are_not_found(client, trained_run, export_id: str) -> None:
    project = trained_run.project_id
    for response in (
        client.get(f"/api/export/{project}/{export_id}"),
        client.get(f"/api/export/{project}/{export_id}/download"),
        client.delete(f"/api/export/{project}/{export_id}"),
    ):
        assert response.status_code == 404, (export_id, response.text)
        assert response.json()["status"] == "error"


class DamagedExporter:
    """An exporter plugin that writes a genuinely wrong model (perturbed weights, real ONNX export)."""

    @hookimpl
    def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
        def export(model: Any, example_input: Any, options: dict, out_dir: Path, metadata: Any) -> Path:
            damaged = copy.deepcopy(model)
            with torch.no_grad():
                for parameter in damaged.parameters():
                    parameter.mul_(-1.0)
            return onnx_exporter.export_onnx(damaged, example_input, options, out_dir, metadata)

        registry.add(Exporter(id="onnx_damaged", name="Damaged", extension=".onnx", options_schema=onnx_exporter.OPTIONS_SCHEMA,
                              export=export, load_runner=onnx_exporter.load_onnx_runner))


def test_export_that_fails_verification_is_still_downloadable_and_flagged(client, services, trained_run) -> None:
    plugins = PluginHost(disabled=set()).load_all()
    plugins.add_plugin(DamagedExporter(), name="damaged")
    services.settings.cpu_job_slots = 0  # the app's queue must not take it: this test's plugins know the format
    in_process = ExportService(services.workspace, plugins, services.queue)
    record = in_process.create(trained_run.project_id, experiment_id=trained_run.experiment_id,
                               run_id=trained_run.run_id, format="onnx_damaged")
    export_or_follow(services.workspace, services.workspace.exports_dir(trained_run.project_id) / record.id, plugins)

    got = client.get(f"/api/export/{trained_run.project_id}/{record.id}").json()["data"]
    assert got["status"] == "failed" and got["verification_failed"] is True
    assert got["verification"]["passed"] is False and got["verification"]["images"] == 6
    download = client.get(f"/api/export/{trained_run.project_id}/{record.id}/download")
    assert download.status_code == 200
    assert download.headers["x-modelyard-verification"] == "failed"
    assert hashlib.sha256(download.content).hexdigest() == got["file"]["sha256"]


def test_content_disposition_has_an_ascii_fallback_and_the_utf8_name() -> None:
    header = content_disposition('modèle "final";.onnx')
    assert header.startswith('attachment; filename="')
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback.isascii() and '"' not in fallback and ";" not in fallback
    assert header.endswith("filename*=UTF-8''mod%C3%A8le%20%22final%22%3B.onnx")


@pytest.mark.parametrize("bundle", ["tar", "../../etc/passwd", "zip%00", "ZIP "])
def test_unknown_bundle_kind_is_rejected_before_touching_files(client, trained_run, pending_only, bundle: str) -> None:
    created = client.post(f"/api/export/{trained_run.project_id}", json=_body(trained_run)).json()["data"]
    response = client.get(f"/api/export/{trained_run.project_id}/{created['id']}/download", params={"bundle": bundle})
    assert_error(response, 422, "VALIDATION_ERROR")


class PickyExporter:
    """An exporter plugin whose ``validate`` refuses an option value it cannot honour (checked at request time)."""

    seen: list[dict] = []

    @hookimpl
    def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
        def validate(options: dict, config: dict) -> None:
            PickyExporter.seen.append({"options": options, "config": config})
            if options["opset_version"] < 17:
                raise ValidationError("onnx_picky needs opset 17 or newer", field="opset_version")

        registry.add(Exporter(id="onnx_picky", name="Picky", extension=".onnx", options_schema=onnx_exporter.OPTIONS_SCHEMA,
                              export=onnx_exporter.export_onnx, load_runner=onnx_exporter.load_onnx_runner,
                              validate=validate))


def test_an_exporters_validate_refusing_an_option_is_422_at_the_request_and_nothing_is_queued(
    client, services, trained_run, pending_only
) -> None:
    services.plugins.add_plugin(PickyExporter(), name="picky_exporter")
    try:
        project = trained_run.project_id
        response = client.post(f"/api/export/{project}", json=_body(trained_run, format="onnx_picky",
                                                                     options={"opset_version": 13}))
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert error["message"] == "onnx_picky needs opset 17 or newer"
        assert error["details"]["field"] == "options.opset_version"
        assert client.get(f"/api/export/{project}").json()["data"] == []
        seen = PickyExporter.seen[-1]
        assert seen["options"]["opset_version"] == 13 and "score_threshold" not in seen["options"]  # its own options
        assert seen["config"]["model"]["architecture"] == "simple_cnn"  # the run's frozen config, as plain data

        created = client.post(f"/api/export/{project}", json=_body(trained_run, format="onnx_picky",
                                                                    options={"opset_version": 18}))
        assert created.status_code == 201, created.text
    finally:
        services.plugins.remove_plugin("picky_exporter")
