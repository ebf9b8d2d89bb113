"""Exporters that say how they are verified, build on another format, name their file and their README (issue 16).

The plugin under test is tests/fixtures/modelyard_int8_exporter, written as a
third party would: ``example_onnx_int8`` quantises the built-in ONNX export
(``base_format="onnx"``) with onnxruntime's dynamic int8 quantisation and
declares a lossy policy (top-1 agreement only). On the session's trained
``simple_cnn`` its logits differ from PyTorch's by about 3e-4, more than the
default tolerance (1e-4 x the logit scale), with every top-1 class the same:
so it passes its own policy and fails the default one (``onnx_int8_default``
is the same exporter without a policy, registered to show that).

Most tests register the plugin in this process (``add_plugin``) and run the
job here, claimed the way ``modelyard export`` claims it; one "installs" it
through its entry point so the server's own worker processes load it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import numpy as np
import onnx
import pytest
from litestar.testing import TestClient

from modelyard.api.app import create_app
from modelyard.core import METADATA_KEYS, METADATA_PREFIX, Exporter, ExportMetadata, VerificationPolicy, hookimpl
from modelyard.core.errors import PluginError, ValidationError
from modelyard.core.export.bundle import usage_snippet
from modelyard.core.export.service import ExportService, model_file_name
from modelyard.core.export.verify import FP32_POLICY, compare_outputs, effective_policy
from modelyard.core.export.worker import compare_exported
from modelyard.core.jobs.foreground import export_or_follow
from modelyard.core.pipeline.runner import run_pipeline
from modelyard.core.pipeline.schema import parse_pipeline
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.records import Export
from modelyard.core.registry import ExporterRegistry
from modelyard.core.sample_data import generate_shapes
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings
from modelyard.plugins import onnx_exporter
from modelyard.plugins.object_detection.export import compare as compare_detections
from modelyard.testing import check_exporter
from tests.conftest import BASE_URL, TrainedRun, assert_error, install_fixture_plugin
from tests.helpers.run_fixtures import wait_for

INT8_DIR = Path(__file__).parents[2] / "fixtures" / "modelyard_int8_exporter"
LOSSY = VerificationPolicy(lossy=True, min_top1_agreement=1.0, min_box_agreement=0.9)


def _load_int8() -> ModuleType:
    """The fixture plugin's module, imported from its file (not installed: ``add_plugin`` registers it)."""
    spec = importlib.util.spec_from_file_location("modelyard_int8_exporter_in_process",
                                                  INT8_DIR / "modelyard_int8_exporter" / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INT8 = _load_int8()


def _export_onnx_as_bin(model: Any, example_input: Any, options: dict, out_dir: Path, metadata: Any) -> Path:
    path = onnx_exporter.export_onnx(model, example_input, options, out_dir, metadata)
    return path.rename(path.with_suffix(".bin"))


class MorePlugins:
    """The int8 exporter without its policy, and a format whose file is no ONNX or TorchScript file by name."""

    @hookimpl
    def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
        registry.add(dataclasses.replace(INT8.EXPORTER, id="onnx_int8_default", verification=None, usage_snippet=None))
        registry.add(Exporter(id="blob", name="Blob", extension=".bin", options_schema=onnx_exporter.OPTIONS_SCHEMA,
                              export=_export_onnx_as_bin, load_runner=onnx_exporter.load_onnx_runner))


@pytest.fixture(scope="module")
def plugins() -> PluginHost:
    host = PluginHost(disabled=set()).load_all()
    host.add_plugin(INT8, name="int8_exporter")
    host.add_plugin(MorePlugins(), name="more")
    assert host.plugins["int8_exporter"].status == "loaded", host.plugins["int8_exporter"].error
    assert host.plugins["more"].status == "loaded", host.plugins["more"].error
    return host


@pytest.fixture
def exports(services: Services, plugins: PluginHost) -> ExportService:
    return ExportService(services.workspace, plugins, services.queue)  # the queue is not started: jobs wait


def _export(services: Services, exports: ExportService, plugins: PluginHost, run: TrainedRun, fmt: str,
            **options: Any) -> Export:
    record = exports.create(run.project_id, experiment_id=run.experiment_id, run_id=run.run_id, format=fmt,
                            options=options)
    export_or_follow(services.workspace, services.workspace.exports_dir(run.project_id) / record.id, plugins)
    return exports.get(run.project_id, record.id)


def _file(services: Services, run: TrainedRun, record: Export) -> Path:
    return services.workspace.exports_dir(run.project_id) / record.id / record.file.name


# -- verification policy and base_format, through the export job ---------------------------------
def test_int8_export_on_the_onnx_base_passes_its_lossy_policy_and_reports_both_verifications(
        services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "example_onnx_int8")
    assert record.status == "completed", record.error
    verification = record.verification
    assert verification.passed is True and verification.top1_agreement == 1.0 and verification.images == 6
    assert verification.max_abs_diff > verification.tolerance  # reported, not applied: the policy is lossy
    policy = verification.policy
    assert (policy.source, policy.lossy, policy.min_top1_agreement) == ("exporter", True, 1.0)
    base = verification.base
    assert base.format == "onnx" and base.passed is True and base.images == 6
    assert base.max_abs_diff <= base.tolerance and base.policy.source == "default" and base.policy.lossy is False
    stored = json.loads((_file(services, trained_run, record).parent / "export.json").read_text(encoding="utf-8"))
    assert stored["verification"]["policy"]["lossy"] is True and stored["verification"]["base"]["format"] == "onnx"

    path = _file(services, trained_run, record)
    assert path.name == f"simple_cnn-{trained_run.run_id}.int8.onnx"  # the declared extension, as declared
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix == ".onnx") == [path.name]  # no base file left
    model = onnx.load(str(path))
    assert any(node.op_type in ("MatMulInteger", "ConvInteger") for node in model.graph.node)  # really quantised
    props = {p.key: p.value for p in model.metadata_props}
    assert set(METADATA_KEYS.values()) <= set(props)
    assert json.loads(props[METADATA_KEYS["classes"]]) == ["circle", "square", "triangle"]
    assert props[METADATA_PREFIX + "checkpoint"] == "best"


def test_the_same_int8_file_fails_under_the_default_policy(services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "onnx_int8_default")
    assert record.status == "failed" and record.verification_failed is True
    verification = record.verification
    assert verification.policy.source == "default" and verification.policy.lossy is False
    assert verification.top1_agreement == 1.0 and verification.max_abs_diff > verification.tolerance
    assert verification.base.passed is True  # the float32 base was fine; the quantised file is what differs
    assert "does not match PyTorch" in record.error.message


def test_a_policy_function_of_the_options_decides_per_export(services, exports, plugins, trained_run) -> None:
    strict_unless_asked = dataclasses.replace(
        INT8.EXPORTER, id="onnx_int8_optional",
        verification=lambda options: LOSSY if options["per_channel"] else FP32_POLICY)
    host = PluginHost(disabled=set()).load_all()

    class Plugin:
        @hookimpl
        def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
            registry.add(strict_unless_asked)

    host.add_plugin(Plugin(), name="optional")
    service = ExportService(services.workspace, host, services.queue)
    assert _export(services, service, host, trained_run, "onnx_int8_optional", per_channel=True).status == "completed"
    strict = _export(services, service, host, trained_run, "onnx_int8_optional", per_channel=False)
    assert strict.status == "failed" and strict.verification.policy.lossy is False


def test_built_in_formats_report_the_default_policy_and_fp16_keeps_its_looser_one(
        services, exports, plugins, trained_run) -> None:
    plain = _export(services, exports, plugins, trained_run, "onnx")
    assert plain.status == "completed", plain.error
    assert (plain.verification.policy.source, plain.verification.policy.atol) == ("default", 1e-4)
    assert plain.verification.base is msgspec.UNSET
    half = _export(services, exports, plugins, trained_run, "onnx", fp16=True)
    assert half.status == "completed", half.error
    assert (half.verification.policy.atol, half.verification.policy.rtol) == (1e-2, 1e-2)
    assert half.verification.tolerance >= 1e-2


def test_base_options_come_from_the_request_when_the_derived_schema_declares_them(
        services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "example_onnx_int8", opset_version=13)
    assert record.status == "completed", record.error
    assert record.options == {"opset_version": 13, "per_channel": False}
    opsets = {entry.domain: entry.version for entry in onnx.load(str(_file(services, trained_run, record))).opset_import}
    assert opsets[""] == 13
    with pytest.raises(ValidationError) as unknown:  # the base's other options are not the derived format's
        exports.create(trained_run.project_id, experiment_id=trained_run.experiment_id, run_id=trained_run.run_id,
                       format="example_onnx_int8", options={"fp16": True})
    assert unknown.value.field == "options.fp16"


# -- through the API, with the server's own worker processes, and in a pipeline ------------------
@pytest.fixture
def int8_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    yield from install_fixture_plugin(INT8_DIR, tmp_path, monkeypatch)


def test_int8_export_completes_through_the_api_in_a_worker_process(int8_installed, settings: Settings,
                                                                     trained_run) -> None:
    app = create_app(settings, build_services(settings, plugins=PluginHost().load_all()))
    with TestClient(app, base_url=BASE_URL) as client:
        formats = {f["id"]: f for f in client.get("/api/export/formats").json()["data"]}
        assert formats["example_onnx_int8"]["extension"] == ".int8.onnx" and formats["example_onnx_int8"]["base_format"] == "onnx"
        assert formats["example_onnx_int8"]["verification"] == {"source": "exporter", **LOSSY.as_dict()}
        assert formats["onnx"]["base_format"] is None and formats["onnx"]["verification"]["source"] == "default"
        project = trained_run.project_id
        response = client.post(f"/api/export/{project}", json={
            "experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "format": "example_onnx_int8"})
        assert response.status_code == 201, response.text
        export_id = response.json()["data"]["id"]

        def finished() -> dict | None:
            data = client.get(f"/api/export/{project}/{export_id}").json()["data"]
            return data if data["status"] in ("completed", "failed") else None

        done = wait_for(finished, 120, interval=0.3, what=f"export {export_id}")
        assert done["status"] == "completed", done["error"]
        assert done["verification"]["passed"] is True and done["verification_failed"] is False
        assert done["verification"]["policy"] == {"source": "exporter", **LOSSY.as_dict()}
        assert done["verification"]["base"]["format"] == "onnx" and done["verification"]["base"]["passed"] is True
        assert done["file"]["name"].endswith(f"{trained_run.run_id}.int8.onnx")

        download = client.get(f"/api/export/{project}/{export_id}/download")
        assert download.status_code == 200 and download.headers["x-modelyard-verification"] == "passed"
        assert done["file"]["name"] in download.headers["content-disposition"]
        bundle = client.get(f"/api/export/{project}/{export_id}/download", params={"bundle": "zip"})
        with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
            assert done["file"]["name"] in archive.namelist()
            readme = archive.read("README.txt").decode("utf-8")
        assert "int8 kernels: onnxruntime's CPU provider" in readme  # the exporter's own snippet
        assert "compared by agreement only" in readme and "Made from the onnx export" in readme


def test_a_missing_base_format_is_refused_when_the_export_is_requested(settings: Settings, trained_run) -> None:
    host = PluginHost(disabled=set()).load_all()
    # a base registered later (or never) cannot be checked when the plugin registers: it is checked per request
    host.add_plugin(_plugin_adding(dataclasses.replace(INT8.EXPORTER, id="tflite_int8", base_format="tflite")),
                    name="orphan")
    assert host.plugins["orphan"].status == "loaded"
    with TestClient(create_app(settings, build_services(settings, plugins=host)), base_url=BASE_URL) as client:
        response = client.post(f"/api/export/{trained_run.project_id}", json={
            "experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "format": "tflite_int8"})
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert error["details"]["field"] == "format" and error["details"]["base_format"] == "tflite"
        assert "'tflite' format, which is not installed" in error["message"]
        assert client.get(f"/api/export/{trained_run.project_id}").json()["data"] == []


TINY_CONFIG = {
    "model": {"architecture": "simple_cnn"},
    "data": {"image_size": [16, 16], "batch_size": 8, "num_workers": 0, "cache": "none"},
    "training": {"max_epochs": 2, "seed": 3, "scheduler": {"name": "none"}},
    "hardware": {"devices": ["cpu"]},
}


def test_a_pipeline_export_that_passes_its_lossy_policy_is_completed(settings: Settings, import_root: Path,
                                                                      plugins: PluginHost) -> None:
    shapes = import_root / "shapes"
    generate_shapes(shapes, per_class=4, size=16, seed=1)
    services = build_services(settings, plugins=plugins)
    document = {
        "project": {"name": "P"},
        "dataset": {"path": str(shapes)},
        "split": {"name": "s", "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 1},
        "experiment": {"name": "e", "config": TINY_CONFIG},
        "exports": [{"format": "example_onnx_int8"}, {"format": "onnx_int8_default"}],
    }
    outcome = run_pipeline(services, parse_pipeline(document), import_root, progress_bar=False)
    lossy, default = outcome.result["exports"]
    assert lossy["status"] == "completed", lossy["error"]
    assert lossy["verification"]["policy"]["lossy"] is True and lossy["verification"]["base"]["passed"] is True
    assert lossy["file"].endswith(".int8.onnx")
    # the same file under the default policy fails, and only that export is the pipeline's error
    assert default["status"] == "failed" and default["verification"]["top1_agreement"] == 1.0
    assert [error.split(" failed")[0] for error in outcome.errors] == ["export onnx_int8_default"]


def test_a_pipeline_naming_a_format_without_its_base_is_refused_before_any_step(settings: Settings,
                                                                                import_root: Path) -> None:
    host = PluginHost(disabled=set()).load_all()
    host.exporters.add(dataclasses.replace(INT8.EXPORTER, id="tflite_int8", base_format="tflite"))
    services = build_services(settings, plugins=host)
    document = {"project": {"name": "P"}, "dataset": {"path": str(import_root)},
                "split": {"name": "s", "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}},
                "experiment": {"name": "e", "config": TINY_CONFIG}, "exports": [{"format": "tflite_int8"}]}
    with pytest.raises(ValidationError) as refused:
        run_pipeline(services, parse_pipeline(document), import_root, progress_bar=False)
    assert refused.value.field == "exports[0].format" and "tflite" in refused.value.message
    assert services.projects.list() == []


# -- registration: extension, base_format, declaration --------------------------------------------
def _plugin_adding(exporter: Exporter) -> object:
    class Plugin:
        @hookimpl
        def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
            registry.add(exporter)

    return Plugin()


@pytest.mark.parametrize("extension", ["int8.onnx", ".int8/onnx", "./../pt", ".onnx ", ".", "..onnx", ".onnx.",
                                       ".mödel", ".a\\b", "." + "x" * 40, ""])
def test_an_extension_that_cannot_name_a_file_fails_the_plugin_clearly(extension: str, tmp_path: Path) -> None:
    bad = dataclasses.replace(onnx_exporter.EXPORTER, id="bad_ext", extension=extension)
    host = PluginHost(disabled=set())
    host.add_plugin(_plugin_adding(bad), name="bad")
    info = host.plugins["bad"]
    assert info.status == "failed" and "bad_ext" not in host.exporters
    assert "export format 'bad_ext'" in info.error and "extension" in info.error
    with pytest.raises(AssertionError, match="extension"):  # check_exporter refuses what the registry refuses
        check_exporter(bad, tmp_path)


@pytest.mark.parametrize("extension", [".onnx", ".int8.onnx", ".tar.gz", ".ONNX", ".my_fmt-2"])
def test_a_valid_extension_is_kept_exactly_in_the_saved_file_name(extension: str) -> None:
    registry = ExporterRegistry()
    registry.add(dataclasses.replace(onnx_exporter.EXPORTER, id="fmt", extension=extension))
    assert model_file_name("resnet18", "run-abcd1234", extension) == f"resnet18-run-abcd1234{extension}"


def test_a_base_format_serving_other_tasks_or_built_on_another_fails_registration() -> None:
    registry = ExporterRegistry()
    registry.add(onnx_exporter.EXPORTER)
    registry.add(Exporter(id="cls_only", name="c", extension=".c", options_schema={}, export=None,  # type: ignore[arg-type]
                          load_runner=None))  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="does not export object_detection models"):
        registry.add(dataclasses.replace(INT8.EXPORTER, id="det_int8", tasks=("object_detection",),
                                         base_format="cls_only"))
    registry.add(INT8.EXPORTER)
    with pytest.raises(PluginError, match="one level only"):
        registry.add(dataclasses.replace(INT8.EXPORTER, id="int4", base_format="example_onnx_int8"))
    with pytest.raises(PluginError, match="names the exporter itself"):
        registry.add(dataclasses.replace(INT8.EXPORTER, id="loop", base_format="loop"))
    assert registry.names() == ["cls_only", "example_onnx_int8", "onnx"]


def test_a_derived_exporter_must_accept_the_base_file() -> None:
    def export(model: Any, example_input: Any, options: dict, out_dir: Path, metadata: Any) -> Path:
        raise AssertionError("never called")

    with pytest.raises(PluginError, match="base_file"):
        ExporterRegistry().add(dataclasses.replace(INT8.EXPORTER, id="no_base_file", export=export))


@pytest.mark.parametrize("declared", [{"atol": 0.1}, 0.05, "lossy"])
def test_a_verification_that_is_no_policy_fails_registration(declared: Any) -> None:
    with pytest.raises(PluginError, match="verification must be a VerificationPolicy"):
        ExporterRegistry().add(dataclasses.replace(onnx_exporter.EXPORTER, id="odd", verification=declared))


@pytest.mark.parametrize("fields", [{"atol": -1.0}, {"rtol": float("nan")}, {"min_top1_agreement": 1.5},
                                    {"min_box_agreement": -0.1}, {"lossy": "yes"}, {"atol": True}])
def test_a_policy_with_impossible_numbers_cannot_be_built(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="VerificationPolicy"):
        VerificationPolicy(**fields)


# -- check_exporter applies the policy the server applies -----------------------------------------
@pytest.fixture
def trained_net(services, trained_run) -> Any:
    from modelyard.core.training.checkpoints import load_trained_model

    return load_trained_model(services.workspace, trained_run.project_id, trained_run.run_id, "best",
                              experiment_id=trained_run.experiment_id).net


def test_check_exporter_passes_and_fails_the_int8_exporter_as_the_server_does(plugins, trained_net, tmp_path) -> None:
    path = check_exporter(plugins.exporters.get("example_onnx_int8"), tmp_path / "lossy", model=trained_net)
    assert path.name == "model.int8.onnx"
    with pytest.raises(AssertionError, match="does not pass its verification policy"):
        check_exporter(plugins.exporters.get("onnx_int8_default"), tmp_path / "default", model=trained_net)


def test_check_exporter_no_longer_takes_its_own_tolerance(plugins, trained_net, tmp_path) -> None:
    with pytest.warns(DeprecationWarning, match="VerificationPolicy"), pytest.raises(AssertionError):
        check_exporter(plugins.exporters.get("onnx_int8_default"), tmp_path, model=trained_net, atol=0.05)


def test_check_exporter_runs_a_derived_exporter_on_the_base_it_is_given(trained_net, tmp_path) -> None:
    path = check_exporter(INT8.EXPORTER, tmp_path, model=trained_net, base=onnx_exporter.EXPORTER)
    assert path.parent.name == "derived" and (tmp_path / "export-example_onnx_int8" / "base" / "model.onnx").is_file()
    with pytest.raises(AssertionError, match="is not its base_format"):
        check_exporter(INT8.EXPORTER, tmp_path / "wrong", model=trained_net, base=dataclasses.replace(
            onnx_exporter.EXPORTER, id="other"))


# -- the comparisons under a policy ---------------------------------------------------------------
def test_a_lossy_policy_reports_the_difference_and_lets_agreement_decide() -> None:
    reference = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.5], [0.0, 0.2, 0.1]])
    exported = reference + 0.05
    assert compare_outputs(reference, exported)["passed"] is False
    lossy = compare_outputs(reference, exported, policy=VerificationPolicy(lossy=True))
    assert lossy["passed"] is True and lossy["max_abs_diff"] == pytest.approx(0.05)
    flipped = exported.copy()
    flipped[3] = [0.3, 0.0, 0.0]
    assert compare_outputs(reference, flipped, policy=VerificationPolicy(lossy=True))["passed"] is False
    three_in_four = compare_outputs(reference, flipped, policy=VerificationPolicy(lossy=True, min_top1_agreement=0.75))
    assert three_in_four["passed"] is True and three_in_four["top1_agreement"] == 0.75
    below = compare_outputs(reference, flipped, policy=VerificationPolicy(lossy=True, min_top1_agreement=0.8))
    assert below["passed"] is False and "below the policy's 0.8" in below["problem"]


def test_atol_and_rtol_bound_the_difference_relative_to_the_output_scale() -> None:
    reference = np.array([[20.0, 1.0]])
    policy = VerificationPolicy(atol=0.01, rtol=0.001)  # max(0.01, 0.001 x 20) = 0.02
    assert compare_outputs(reference, reference + 0.019, policy=policy)["passed"] is True
    result = compare_outputs(reference, reference + 0.021, policy=policy)
    assert result["passed"] is False and result["tolerance"] == pytest.approx(0.02)
    assert "exceeds the tolerance" in result["problem"]
    default = compare_outputs(reference, reference, half=False)
    assert default["tolerance"] == compare_outputs(reference, reference, policy=FP32_POLICY)["tolerance"]


def _boxes(*rows: tuple[float, float, float, float, float, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    array = np.array(rows, dtype=np.float32).reshape(-1, 6)
    return array[:, :4], array[:, 4], array[:, 5].astype(np.int64)


def test_detection_box_agreement_decides_under_a_lossy_policy() -> None:
    reference = [_boxes((0, 0, 10, 10, 0.9, 0), (20, 20, 30, 30, 0.8, 1), (40, 40, 50, 50, 0.7, 1),
                        (60, 60, 70, 70, 0.6, 0))]
    # every box moved a little (IoU < 0.99), scores off by 0.01, and the last box lost: 3 of 4 agree
    exported = [_boxes((0, 0, 10.4, 10, 0.91, 0), (20, 20, 30.4, 30, 0.79, 1), (40, 40, 50.4, 50, 0.71, 1))]
    default = compare_detections(reference, exported, 0.5, half=False)
    assert default["passed"] is False and default["box_agreement"] == 0.75 and default["match_iou"] == 0.5
    assert compare_detections(reference, exported, 0.5, half=False, policy=LOSSY)["passed"] is False  # needs 0.9
    lenient = compare_detections(reference, exported, 0.5, half=False,
                                 policy=VerificationPolicy(lossy=True, min_box_agreement=0.75))
    assert lenient["passed"] is True and lenient["count_mismatches"] == 1 and lenient["min_iou"] < 0.99
    same = compare_detections(reference, reference, 0.5, half=False)
    assert same["passed"] is True and same["box_agreement"] == 1.0 and same["tolerance"] == 1e-4


def test_a_task_runtime_without_a_policy_argument_compares_by_its_own_rules() -> None:
    class OldRuntime:
        def compare_exported(self, reference: Any, exported: Any, options: dict) -> dict:
            return {"images": 1, "passed": True, "tolerance": 0.5}

    verification = compare_exported(OldRuntime(), None, None, {}, LOSSY, "exporter")  # type: ignore[arg-type]
    assert verification["policy"] == {"source": "task"} and verification["passed"] is True


def test_effective_policy_calls_a_policy_function_with_the_exporters_options() -> None:
    seen: list[dict] = []

    def policy(options: dict) -> VerificationPolicy:
        seen.append(options)
        return LOSSY

    assert effective_policy(dataclasses.replace(INT8.EXPORTER, verification=policy), {"per_channel": True}) == (
        LOSSY, "exporter")
    assert seen == [{"per_channel": True}]
    assert effective_policy(onnx_exporter.EXPORTER, {"fp16": True})[0].atol == 1e-2


# -- README snippet and metadata constants ---------------------------------------------------------
def test_the_bundle_readme_uses_the_exporters_snippet_or_a_neutral_note(services, exports, plugins,
                                                                         trained_run) -> None:
    blob = _export(services, exports, plugins, trained_run, "blob")
    assert blob.status == "completed", blob.error
    assert blob.file.name.endswith(".bin")
    download = exports.download(trained_run.project_id, blob.id, bundle=True)
    with zipfile.ZipFile(download.path) as archive:
        readme = archive.read("README.txt").decode("utf-8")
    assert "onnxruntime" not in readme and "torch.jit" not in readme  # no other runtime's example
    assert "No runnable example for the 'blob' format" in readme and "labels.json" in readme
    assert 'prep = json.load(open("preprocessing.json"))' in readme

    int8 = usage_snippet("example_onnx_int8", "m.int8.onnx", None, INT8.EXPORTER)
    assert "int8 kernels" in int8 and "outputs = session.run" in int8 and "print(labels[int(np.argmax(logits))])" in int8
    compile(int8, "README", "exec")  # a script, not pseudo-code
    # a derived ONNX file without a snippet of its own gets onnxruntime's, as any .onnx file does
    assert "ort.InferenceSession(\"m.int8.onnx\"" in usage_snippet("onnx_int8_default", "m.int8.onnx", None)


def test_metadata_constants_are_what_the_onnx_exporter_writes() -> None:
    metadata = ExportMetadata(classes=["a", "b"], input_size=(8, 12), mean=[0.5], std=[0.25], architecture="net",
                              run_id="run-00000001", channels=1, extra={"checkpoint": "last", "score_threshold": 0.4})
    props = onnx_exporter.metadata_props(metadata)
    assert set(props) == set(METADATA_KEYS.values()) | {"modelyard.checkpoint", "modelyard.score_threshold"}
    assert all(key.startswith(METADATA_PREFIX) for key in props)
    assert json.loads(props[METADATA_KEYS["input_size"]]) == [8, 12] and props[METADATA_KEYS["task"]] == "classification"
    assert props["modelyard.score_threshold"] == "0.4"
