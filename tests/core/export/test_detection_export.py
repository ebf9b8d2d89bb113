"""Object detection exports on a really trained simple_detector: ONNX and TorchScript, verified box for box.

One tiny detection run is trained once per session with the real engine
(``detection_run_template`` in tests/conftest.py: 48 generated COCO canvases
imported through the dataset service, split, 64 px, 40 epochs: about 10 s,
enough for boxes well above the heat map's untrained background). Exports run as real export jobs in this process, claimed the
way ``modelyard export`` claims them without a server (``export_or_follow``);
the refusals go through the API.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from modelyard.core import Exporter, hookimpl
from modelyard.core.export.service import ExportService
from modelyard.core.jobs.foreground import export_or_follow
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.records import Export
from modelyard.core.services import Services
from modelyard.core.training.checkpoints import load_trained_model
from modelyard.plugins import onnx_exporter
from modelyard.plugins.object_detection.export import (
    IOU_REQUIRED,
    SCORE_THRESHOLD,
    SCORE_TOLERANCE,
    box_iou,
    compare,
)
from tests.conftest import DETECTION_IMAGE_PX, TrainedRun, assert_error

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]

IMAGE_PX = DETECTION_IMAGE_PX
#: Low enough that a model trained for seconds has boxes to compare, above its untrained background (~0.1).
LOW_THRESHOLD = 0.2
METADATA_KEYS = {"modelyard.classes", "modelyard.input_size", "modelyard.mean", "modelyard.std",
                 "modelyard.architecture", "modelyard.run_id", "modelyard.channels", "modelyard.task",
                 "modelyard.score_threshold"}


class DamagedDetectorExporter:
    """A third-party-style exporter serving detection whose file holds perturbed weights."""

    @hookimpl
    def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
        def export(model: Any, example_input: Any, options: dict, out_dir: Path, metadata: Any) -> Path:
            damaged = copy.deepcopy(model)
            with torch.no_grad():
                for parameter in damaged.parameters():
                    parameter.add_(torch.randn_like(parameter) * 0.3)
            return onnx_exporter.export_onnx(damaged, example_input, options, out_dir, metadata)

        registry.add(Exporter(id="onnx_damaged_detector", name="Damaged detector", extension=".onnx",
                              options_schema=onnx_exporter.OPTIONS_SCHEMA, export=export,
                              load_runner=onnx_exporter.load_onnx_runner, tasks=("object_detection",)))


class ClassifierOnlyExporter:
    """An exporter written before tasks: it says nothing, so it serves classification only."""

    @hookimpl
    def register_exporters(self, registry) -> None:  # type: ignore[no-untyped-def]
        registry.add(Exporter(id="logits_only", name="Logits only", extension=".bin", options_schema={"type": "object"},
                              export=lambda *a: Path("x"), load_runner=lambda *a: (lambda b: b)))


@pytest.fixture(scope="module")
def plugins() -> PluginHost:
    host = PluginHost(disabled=set()).load_all()
    host.add_plugin(DamagedDetectorExporter(), name="damaged_detector")
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


def _val_batch(services: Services, run: TrainedRun) -> tuple[Any, torch.Tensor, list[str]]:
    """The trained model and the run's val images through its own preprocessing."""
    trained = load_trained_model(services.workspace, run.project_id, run.run_id, "best", experiment_id=run.experiment_id)
    dataset = json.loads(services.workspace.dataset_json(run.project_id).read_text(encoding="utf-8"))
    names = [image["filename"] for image in dataset["images"] if image["split"][0] == "val"]
    return trained, trained.preprocess([services.workspace.images_dir(run.project_id) / n for n in names]), names


# -- ONNX --------------------------------------------------------------------------------------
def test_onnx_detection_export_matches_pytorch_box_for_box_in_onnxruntime(services, exports, plugins, detection_run) -> None:
    record = _export(services, exports, plugins, detection_run, "onnx", score_threshold=LOW_THRESHOLD)
    assert record.status == "completed", record.error
    assert record.options["score_threshold"] == LOW_THRESHOLD
    verification = record.verification
    assert verification.passed is True and verification.problem is None
    _, batch, names = _val_batch(services, detection_run)
    assert verification.images == len(names) > 10  # the val subset
    assert verification.boxes > 0 and verification.matched == verification.boxes
    assert verification.min_iou >= IOU_REQUIRED and verification.iou_required == IOU_REQUIRED
    assert verification.count_mismatches == 0 and verification.label_mismatches == 0
    assert verification.max_score_diff <= verification.tolerance == SCORE_TOLERANCE
    assert verification.score_threshold == LOW_THRESHOLD
    stored = json.loads((_file(services, detection_run, record).parent / "export.json").read_text(encoding="utf-8"))
    assert "top1_agreement" not in stored["verification"] and "max_abs_diff" not in stored["verification"]
    assert record.metadata.task == "object_detection" and record.metadata.export == {"score_threshold": LOW_THRESHOLD}

    path = _file(services, detection_run, record)
    assert path.name == f"simple_detector-{detection_run.run_id}.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in model.graph.input] == [("input", [1, 3, IMAGE_PX, IMAGE_PX])]
    outputs = {o.name: (o.type.tensor_type.elem_type, dims(o)) for o in model.graph.output}
    assert list(outputs) == ["boxes", "scores", "labels"]
    assert outputs["labels"][0] == onnx.TensorProto.INT64 and outputs["boxes"][0] == onnx.TensorProto.FLOAT
    assert outputs["boxes"][1][1] == 4 and isinstance(outputs["boxes"][1][0], str)  # K is symbolic
    assert outputs["boxes"][1][0] == outputs["scores"][1][0] == outputs["labels"][1][0]
    props = {p.key: p.value for p in model.metadata_props}
    assert METADATA_KEYS <= set(props)
    assert props["modelyard.task"] == "object_detection" and json.loads(props["modelyard.score_threshold"]) == LOW_THRESHOLD
    dataset = json.loads(services.workspace.dataset_json(detection_run.project_id).read_text(encoding="utf-8"))
    assert json.loads(props["modelyard.classes"]) == dataset["classes"] == record.metadata.classes
    assert json.loads(props["modelyard.input_size"]) == [IMAGE_PX, IMAGE_PX]

    # independently of the verifier: onnxruntime against the PyTorch network, image by image
    trained, batch, _ = _val_batch(services, detection_run)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    total = 0
    with torch.no_grad():
        found = trained.net(batch)
    for image, expected in zip(batch, found, strict=True):
        boxes, scores, labels = session.run(None, {"input": image[None].numpy()})
        keep = expected["scores"] >= LOW_THRESHOLD
        assert labels.dtype == np.int64 and len(scores) == int(keep.sum())
        assert bool((scores >= LOW_THRESHOLD).all())
        np.testing.assert_array_equal(labels, expected["labels"][keep].numpy())
        np.testing.assert_allclose(scores, expected["scores"][keep].numpy(), atol=1e-5)
        if len(boxes):
            assert np.diag(box_iou(boxes, expected["boxes"][keep].numpy())).min() >= IOU_REQUIRED
        total += len(boxes)
    assert total == verification.boxes


def test_bundle_readme_snippet_runs_the_onnx_file_and_draws_the_boxes(services, exports, plugins, detection_run,
                                                                      tmp_path: Path) -> None:
    record = _export(services, exports, plugins, detection_run, "onnx", score_threshold=LOW_THRESHOLD)
    download = exports.download(detection_run.project_id, record.id, bundle=True)
    with zipfile.ZipFile(download.path) as archive:
        assert set(archive.namelist()) == {record.file.name, "labels.json", "preprocessing.json", "README.txt"}
        archive.extractall(tmp_path)
    prep = json.loads((tmp_path / "preprocessing.json").read_text(encoding="utf-8"))
    assert prep["input_size"] == [IMAGE_PX, IMAGE_PX] and "boxes [K, 4]" in prep["output"]
    readme = (tmp_path / "README.txt").read_text(encoding="utf-8")
    assert "onnxruntime" in readme and "ImageDraw" in readme and f"score {LOW_THRESHOLD:g}" in readme
    snippet = readme.split("Minimal usage:\n\n", 1)[1]

    trained, batch, names = _val_batch(services, detection_run)
    session = ort.InferenceSession(str(tmp_path / record.file.name), providers=["CPUExecutionProvider"])
    counts = [len(session.run(None, {"input": image[None].numpy()})[0]) for image in batch]
    index = int(np.argmax(counts))  # the val image with the most boxes
    assert counts[index] > 0
    original = services.workspace.images_dir(detection_run.project_id) / names[index]
    from PIL import Image

    with Image.open(original) as img:  # a real JPEG twice the size: the snippet must scale the boxes back
        img.convert("RGB").resize((IMAGE_PX * 2, IMAGE_PX * 2)).save(tmp_path / "image.jpg", quality=95)
    (tmp_path / "run.py").write_text(snippet, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines, "the snippet printed no box"
    classes = json.loads((tmp_path / "labels.json").read_text(encoding="utf-8"))
    for line in lines:
        name, score, box = line.split(" ", 2)
        assert name in classes and float(score) >= LOW_THRESHOLD
        assert all(0 <= v <= IMAGE_PX * 2 for v in json.loads(box))  # in the 128 px picture's pixels
    with Image.open(tmp_path / "detections.png") as drawn:
        assert drawn.size == (IMAGE_PX * 2, IMAGE_PX * 2)


# -- TorchScript ---------------------------------------------------------------------------------
def test_torchscript_detection_export_with_the_default_threshold(services, exports, plugins, detection_run) -> None:
    record = _export(services, exports, plugins, detection_run, "torchscript")
    assert record.status == "completed", record.error
    assert record.options == {"freeze": False, "score_threshold": SCORE_THRESHOLD}
    assert record.verification.passed is True and record.verification.score_threshold == SCORE_THRESHOLD
    path = _file(services, detection_run, record)
    assert path.name == f"simple_detector-{detection_run.run_id}.pt"
    extra = {"modelyard.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    metadata = json.loads(extra["modelyard.json"])
    assert metadata["task"] == "object_detection" and metadata["extra"]["score_threshold"] == SCORE_THRESHOLD
    assert list(metadata["outputs"]) == ["boxes", "scores", "labels"] and metadata["input_axes"] == {}
    trained, batch, _ = _val_batch(services, detection_run)
    with torch.no_grad():
        boxes, scores, labels = module(batch[:1])
        expected = trained.net(batch[:1])[0]
    keep = expected["scores"] >= SCORE_THRESHOLD
    assert labels.dtype == torch.int64 and boxes.shape == (int(keep.sum()), 4)
    torch.testing.assert_close(scores, expected["scores"][keep])


def test_torchscript_detection_export_at_a_low_threshold_compares_real_boxes(services, exports, plugins, detection_run) -> None:
    record = _export(services, exports, plugins, detection_run, "torchscript", score_threshold=LOW_THRESHOLD, freeze=True)
    assert record.status == "completed", record.error
    assert record.verification.boxes > 0 and record.verification.min_iou >= IOU_REQUIRED


def test_a_detector_export_with_damaged_weights_fails_verification_and_says_why(services, exports, plugins,
                                                                                detection_run) -> None:
    record = _export(services, exports, plugins, detection_run, "onnx_damaged_detector", score_threshold=LOW_THRESHOLD)
    assert record.status == "failed" and record.verification_failed is True
    assert record.verification.passed is False and record.verification.problem
    assert "does not match PyTorch" in record.error.message and record.verification.problem in record.error.message


# -- refused before the export starts ---------------------------------------------------------------
def _post(client, run: TrainedRun, **body: Any):  # type: ignore[no-untyped-def]
    return client.post(f"/api/export/{run.project_id}", json={"experiment_id": run.experiment_id, "run_id": run.run_id, **body})


def test_a_format_that_does_not_export_detectors_is_422_naming_those_that_do(client, services, detection_run) -> None:
    services.plugins.add_plugin(ClassifierOnlyExporter(), name="classifier_only")
    try:
        error = assert_error(_post(client, detection_run, format="logits_only"), 422, "VALIDATION_ERROR")
    finally:
        services.plugins.remove_plugin("classifier_only")
    assert error["details"]["field"] == "format" and error["details"]["task"] == "object_detection"
    assert {"onnx", "torchscript"} <= set(error["details"]["available"]) and "logits_only" not in error["details"]["available"]
    assert "onnx" in error["message"] and "object_detection" in error["message"]
    assert client.get(f"/api/export/{detection_run.project_id}").json()["data"] == []


@pytest.mark.parametrize(("fmt", "options", "field"), [
    ("onnx", {"score_threshold": 1.5}, "options.score_threshold"),
    ("onnx", {"score_threshold": -0.1}, "options.score_threshold"),
    ("onnx", {"score_threshold": "0.5"}, "options.score_threshold"),
    ("onnx", {"score_threshold": None}, "options.score_threshold"),
    ("torchscript", {"score_threshold": 2}, "options.score_threshold"),
    ("onnx", {"input_shape": [4, 3, IMAGE_PX, IMAGE_PX]}, "options.input_shape"),
    ("onnx", {"input_shape": [1, 3, IMAGE_PX, 10**9]}, "options.input_shape"),
    ("onnx", {"fp16": True}, "options.fp16"),
    ("onnx", {"dynamic_axes": {"input": {"0": "batch"}}}, "options.dynamic_axes"),
    ("onnx", {"dynamic_axes": {"boxes": {"0": "k"}}}, "options.dynamic_axes"),
    ("onnx", {"opset_version": 10**12}, "options.opset_version"),
    ("onnx", {"../../etc/passwd": 1}, "options.../../etc/passwd"),
    ("torchscript", {"input_shape": [1, 3, IMAGE_PX, IMAGE_PX]}, "options.input_shape"),
])
def test_hostile_or_contradictory_options_are_422_before_anything_runs(client, detection_run, fmt, options, field) -> None:
    error = assert_error(_post(client, detection_run, format=fmt, options=options), 422, "VALIDATION_ERROR")
    assert error["details"]["field"].startswith(field)
    assert client.get(f"/api/export/{detection_run.project_id}").json()["data"] == []


def test_a_classification_export_refuses_the_detection_option(client, trained_run) -> None:
    error = assert_error(_post(client, trained_run, format="onnx", options={"score_threshold": 0.5}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "options.score_threshold"


# -- the comparison ------------------------------------------------------------------------------
def _image(*boxes: tuple[float, float, float, float, float, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([b[:4] for b in boxes], dtype=np.float32).reshape(-1, 4),
            np.array([b[4] for b in boxes], dtype=np.float32), np.array([b[5] for b in boxes], dtype=np.int64))


REFERENCE = [_image((10, 10, 30, 30, 0.9, 1), (40, 40, 60, 60, 0.7, 0), (0, 0, 5, 5, 0.2, 2)), _image()]


def test_the_same_boxes_in_another_order_pass() -> None:
    reordered = [_image((40, 40, 60, 60, 0.7, 0), (10, 10, 30, 30, 0.9, 1)), _image()]
    result = compare(REFERENCE, reordered, 0.5, half=False)
    assert result["passed"] is True and result["boxes"] == 2 and result["matched"] == 2 and result["min_iou"] == 1.0
    assert "problem" not in result


def test_a_moved_box_a_missing_box_and_a_wrong_label_each_fail_with_a_reason() -> None:
    moved = compare(REFERENCE, [_image((10, 10, 30, 31, 0.9, 1), (40, 40, 60, 60, 0.7, 0)), _image()], 0.5, half=False)
    assert moved["passed"] is False and moved["min_iou"] < IOU_REQUIRED and "IoU" in moved["problem"]
    missing = compare(REFERENCE, [_image((10, 10, 30, 30, 0.9, 1)), _image()], 0.5, half=False)
    assert missing["passed"] is False and missing["count_mismatches"] == 1 and "PyTorch 2 boxes, exported 1" in missing["problem"]
    relabelled = compare(REFERENCE, [_image((10, 10, 30, 30, 0.9, 2), (40, 40, 60, 60, 0.7, 0)), _image()], 0.5, half=False)
    assert relabelled["passed"] is False and relabelled["label_mismatches"] == 1 and "label" in relabelled["problem"]
    extra = compare(REFERENCE, [REFERENCE[0], _image((1, 1, 9, 9, 0.8, 0))], 0.5, half=False)
    assert extra["passed"] is False and extra["count_mismatches"] == 1


def test_a_box_on_the_threshold_may_fall_on_either_side_of_it() -> None:
    reference = [_image((10, 10, 30, 30, 0.5 + SCORE_TOLERANCE / 2, 1))]
    assert compare(reference, [_image()], 0.5, half=False)["passed"] is True
    assert compare([_image()], reference, 0.5, half=False)["passed"] is True
    clearly = [_image((10, 10, 30, 30, 0.5 + 10 * SCORE_TOLERANCE, 1))]
    assert compare(clearly, [_image()], 0.5, half=False)["passed"] is False


def test_nan_outputs_and_a_short_answer_fail() -> None:
    nan = compare(REFERENCE, [_image((np.nan, 10, 30, 30, 0.9, 1), (40, 40, 60, 60, 0.7, 0)), _image()], 0.5, half=False)
    assert nan["passed"] is False and "NaN" in nan["problem"]
    short = compare(REFERENCE, REFERENCE[:1], 0.5, half=False)
    assert short["passed"] is False and "1 of 2 images" in short["problem"]


def test_two_almost_equal_neighbouring_peaks_are_a_near_tie_not_a_mismatch() -> None:
    # rounding made the export keep the neighbouring cell of an equal-scored plateau, beside PyTorch's box
    reference = [_image((10, 10, 20, 20, 0.3, 1))]
    neighbour = [_image((14, 10, 24, 20, 0.3 + SCORE_TOLERANCE / 2, 1))]  # IoU 0.43: not a pair
    tie = compare(reference, neighbour, 0.05, half=False)
    assert tie["passed"] is True and tie["excused"] == 2 and tie["matched"] == 0
    other_label = compare(reference, [_image((14, 10, 24, 20, 0.3, 2))], 0.05, half=False)
    assert other_label["passed"] is False and other_label["count_mismatches"] == 1
    far = compare(reference, [_image((40, 40, 44, 44, 0.3, 1))], 0.05, half=False)
    assert far["passed"] is False
