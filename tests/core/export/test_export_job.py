"""Export jobs on a really trained checkpoint: files, deployment metadata, verification, bundles.

The job runs in this process, claimed the way ``modelyard export`` claims it
when no server serves the workspace (``export_or_follow``). The failing-verification path uses an exporter plugin
registered by the test that writes a genuinely wrong model (perturbed
weights), through the real ONNX export.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from modelyard.core import Exporter, hookimpl
from modelyard.core.errors import CheckpointNotFoundError, ConflictError, ExperimentNotFoundError, RunNotFoundError, UnknownExportFormatError, ValidationError
from modelyard.core.export.service import ExportService, model_file_name
from modelyard.core.jobs.foreground import export_or_follow
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.records import Export
from modelyard.core.services import Services
from modelyard.plugins import onnx_exporter
from tests.conftest import TrainedRun

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

METADATA_KEYS = {"modelyard.classes", "modelyard.input_size", "modelyard.mean", "modelyard.std", "modelyard.architecture", "modelyard.run_id"}



class WrongWeightsExporter:
    """A third-party-style plugin whose exporter ships a model with damaged weights."""

    @hookimpl
    def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
        def export(model: Any, example_input: Any, options: dict, out_dir: Path, metadata: Any) -> Path:
            damaged = copy.deepcopy(model)
            with torch.no_grad():
                for parameter in damaged.parameters():
                    parameter.add_(torch.randn_like(parameter) * 0.5)
            return onnx_exporter.export_onnx(damaged, example_input, options, out_dir, metadata)

        registry.add(Exporter(id="onnx_damaged", name="Damaged ONNX", extension=".onnx",
                              options_schema=onnx_exporter.OPTIONS_SCHEMA, export=export,
                              load_runner=onnx_exporter.load_onnx_runner))


@pytest.fixture(scope="module")
def plugins() -> PluginHost:
    host = PluginHost(disabled=set()).load_all()
    host.add_plugin(WrongWeightsExporter(), name="wrong_weights")
    return host


@pytest.fixture
def exports(services: Services, plugins: PluginHost) -> ExportService:
    return ExportService(services.workspace, plugins, services.queue)  # the queue is not started: jobs wait


def _export(services: Services, exports: ExportService, plugins: PluginHost, run: TrainedRun, fmt: str, **options: Any) -> Export:
    record = exports.create(run.project_id, experiment_id=run.experiment_id, run_id=run.run_id, format=fmt, options=options)
    assert record.status == "pending"
    export_or_follow(services.workspace, services.workspace.exports_dir(run.project_id) / record.id, plugins)
    return exports.get(run.project_id, record.id)


def _file(services: Services, run: TrainedRun, record: Export) -> Path:
    return services.workspace.exports_dir(run.project_id) / record.id / record.file.name


def test_onnx_export_is_verified_checked_and_carries_deployment_metadata(services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "onnx")
    assert record.status == "completed", record.error
    assert record.options == {"opset_version": 17, "input_shape": None, "simplify": True, "fp16": False,
                                 "dynamic_axes": {"input": {"0": "batch_size"}, "output": {"0": "batch_size"}}}
    verification = record.verification
    assert verification.passed is True and verification.top1_agreement == 1.0
    assert verification.images == 6  # the val subset of the run's split: 2 per class
    assert verification.max_abs_diff <= verification.tolerance <= 1e-3
    path = _file(services, trained_run, record)
    assert path.name == f"simple_cnn-{trained_run.run_id}.onnx"
    assert record.file.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.file.size == path.stat().st_size
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    props = {p.key: p.value for p in model.metadata_props}
    assert METADATA_KEYS <= set(props)
    assert json.loads(props["modelyard.classes"]) == ["circle", "square", "triangle"]
    assert json.loads(props["modelyard.input_size"]) == [16, 16]
    assert json.loads(props["modelyard.mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert json.loads(props["modelyard.std"]) == pytest.approx([0.229, 0.224, 0.225])
    assert props["modelyard.architecture"] == "simple_cnn" and props["modelyard.run_id"] == trained_run.run_id
    assert not (path.parent / ".partial").exists()
    assert set(read_json(path.parent / "export.json")) == set(Export.__struct_fields__)  # the file is the record


def test_torchscript_export_is_traced_verified_and_holds_metadata_in_extra_files(services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "torchscript")
    assert record.status == "completed", record.error
    assert record.verification.passed is True
    path = _file(services, trained_run, record)
    assert path.name == f"simple_cnn-{trained_run.run_id}.pt"
    extra = {"modelyard.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    assert isinstance(module, torch.jit.ScriptModule)
    metadata = json.loads(extra["modelyard.json"])
    assert metadata["classes"] == ["circle", "square", "triangle"] and metadata["input_size"] == [16, 16]
    assert metadata["run_id"] == trained_run.run_id and metadata["architecture"] == "simple_cnn"


@pytest.mark.filterwarnings("ignore:the float32 number:UserWarning")
def test_float16_onnx_is_verified_with_the_half_precision_tolerance(services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "onnx", fp16=True)
    assert record.status == "completed", record.error
    assert record.verification.passed is True
    assert record.verification.tolerance >= 1e-2
    graph_input = onnx.load(str(_file(services, trained_run, record))).graph.input[0]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_static_batch_export_is_verified_in_batches_of_its_own_size(services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "onnx", input_shape=[4, 3, 16, 16], dynamic_axes={}, simplify=False)
    assert record.status == "completed", record.error
    assert record.verification.images == 6  # 4 + 2 padded to 4
    dims = onnx.load(str(_file(services, trained_run, record))).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 3, 16, 16]


def test_genuinely_wrong_exported_model_fails_verification_but_stays_downloadable(services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "onnx_damaged")
    assert record.status == "failed"
    assert record.verification_failed is True
    verification = record.verification
    assert verification.passed is False and verification.images == 6
    assert verification.max_abs_diff > verification.tolerance
    assert "does not match PyTorch" in record.error.message
    download = exports.download(trained_run.project_id, record.id)
    assert download.verification_failed is True and download.path.is_file()


def test_bundle_has_model_labels_preprocessing_and_an_onnxruntime_readme(services, exports, plugins, trained_run) -> None:
    record = _export(services, exports, plugins, trained_run, "onnx")
    download = exports.download(trained_run.project_id, record.id, bundle=True)
    assert download.media_type == "application/zip" and not download.verification_failed
    with zipfile.ZipFile(io.BytesIO(download.path.read_bytes())) as archive:
        names = set(archive.namelist())
        assert names == {record.file.name, "labels.json", "preprocessing.json", "README.txt"}
        assert json.loads(archive.read("labels.json")) == ["circle", "square", "triangle"]
        prep = json.loads(archive.read("preprocessing.json"))
        assert prep["input_size"] == [16, 16] and prep["channels"] == 3
        assert prep["mean"] == pytest.approx([0.485, 0.456, 0.406]) and prep["std"] == pytest.approx([0.229, 0.224, 0.225])
        readme = archive.read("README.txt").decode("utf-8")
        assert "onnxruntime" in readme and record.file.name in readme
        assert archive.read(record.file.name) == _file(services, trained_run, record).read_bytes()


def test_download_of_an_unfinished_export_is_a_conflict(services, exports, trained_run) -> None:
    record = exports.create(trained_run.project_id, experiment_id=trained_run.experiment_id, run_id=trained_run.run_id)
    with pytest.raises(ConflictError):
        exports.download(trained_run.project_id, record.id)


def test_request_errors_name_the_format_option_run_or_checkpoint(services, exports, trained_run) -> None:
    ids = {"experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id}
    with pytest.raises(UnknownExportFormatError) as unknown:
        exports.create(trained_run.project_id, format="tflite", **ids)
    assert unknown.value.field == "format" and "onnx" in unknown.value.details["available"]
    with pytest.raises(ValidationError) as wrong_type:
        exports.create(trained_run.project_id, format="onnx", options={"opset_version": "17"}, **ids)
    assert wrong_type.value.field == "options.opset_version"
    with pytest.raises(ValidationError) as shape:
        exports.create(trained_run.project_id, format="onnx", options={"input_shape": [1, 3, 224, 224]}, **ids)
    assert shape.value.field == "options.input_shape"
    with pytest.raises(RunNotFoundError):
        exports.create(trained_run.project_id, experiment_id=trained_run.experiment_id, run_id="run-00000000")
    with pytest.raises(ExperimentNotFoundError):
        exports.create(trained_run.project_id, experiment_id="exp-00000000", run_id=trained_run.run_id)
    (trained_run.run_dir / "checkpoints" / "last.ckpt").unlink()
    with pytest.raises(CheckpointNotFoundError):
        exports.create(trained_run.project_id, checkpoint="last", **ids)
    assert exports.list(trained_run.project_id) == []


def test_deleting_a_running_export_stops_its_worker_and_removes_the_folder(services, exports, trained_run) -> None:
    record = exports.create(trained_run.project_id, experiment_id=trained_run.experiment_id, run_id=trained_run.run_id)
    folder = services.workspace.exports_dir(trained_run.project_id) / record.id
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", record.id], start_new_session=True)
    try:
        atomic_write_json(folder / "export.json", dict(read_json(folder / "export.json"), status="running", worker_pid=stand_in.pid))
        exports.delete(trained_run.project_id, record.id)
        assert stand_in.wait(timeout=10) != 0
        assert not folder.exists()
    finally:
        stand_in.kill()
        stand_in.wait()


def test_model_file_name_keeps_only_safe_characters() -> None:
    assert model_file_name("resnet18", "run-abcd1234", ".onnx") == "resnet18-run-abcd1234.onnx"
    assert model_file_name("../../evil name", "run-abcd1234", "./../pt") == "evil_name-run-abcd1234.pt"
    assert np.all([c.isalnum() or c in "._-" for c in model_file_name("ü/ñ\x00", "run-abcd1234", "x")])
