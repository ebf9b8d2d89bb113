"""``onnx`` exporter: a real simple_cnn export, run back through onnxruntime, with its metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from modelyard.core import ExportMetadata
from modelyard.core.errors import ValidationError
from modelyard.plugins.onnx_exporter import EXPORTER, read_metadata
from modelyard.plugins.simple_cnn import build_simple_cnn
from modelyard.testing import check_exporter, single_threaded

METADATA = ExportMetadata(
    classes=["cat", "dog", "bird"],
    input_size=(32, 32),
    mean=[0.485, 0.456, 0.406],
    std=[0.229, 0.224, 0.225],
    architecture="simple_cnn",
    run_id="run-e5f6g7h8",
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_simple_cnn(3)
    net.train()  # give BatchNorm non-trivial running statistics
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 32, 32) * 2 + 0.5)
    return net.eval()


@pytest.fixture
def batch() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(4, 3, 32, 32)


def _eager(model: torch.nn.Module, batch: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(batch).numpy()


def test_onnx_export_matches_pytorch_with_a_dynamic_batch(model, batch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with single_threaded():
        path = EXPORTER.export(model, batch[:1], {}, tmp_path, METADATA)
        got = EXPORTER.load_runner(path, {})(batch.numpy())
    assert path == tmp_path / "model.onnx"
    np.testing.assert_allclose(got, _eager(model, batch), atol=1e-4)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch_size"
    assert model.training is False  # the caller's model is left as it was


def test_onnx_file_carries_classes_and_preprocessing_in_its_metadata(model, batch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with single_threaded():
        path = EXPORTER.export(model, batch[:1], {}, tmp_path, METADATA)
    props = read_metadata(path)
    assert json.loads(props["modelyard.classes"]) == ["cat", "dog", "bird"]
    assert json.loads(props["modelyard.input_size"]) == [32, 32]
    assert json.loads(props["modelyard.mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(props["modelyard.std"]) == [0.229, 0.224, 0.225]
    assert props["modelyard.architecture"] == "simple_cnn"
    assert props["modelyard.run_id"] == "run-e5f6g7h8"


def test_onnx_fp16_export_takes_and_returns_half_precision(model, batch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with single_threaded():
        path = EXPORTER.export(model, batch[:1], {"fp16": True}, tmp_path, METADATA)
        got = EXPORTER.load_runner(path, {"fp16": True})(batch.numpy())
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _eager(model, batch), atol=5e-2)
    assert json.loads(read_metadata(path)["modelyard.classes"]) == ["cat", "dog", "bird"]


def test_onnx_static_shape_without_simplify_uses_the_requested_input_shape(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    options = {"input_shape": [2, 3, 24, 24], "dynamic_axes": {}, "simplify": False, "opset_version": 13}
    with single_threaded():
        path = EXPORTER.export(model, torch.zeros(1, 3, 32, 32), options, tmp_path, METADATA)
        x = torch.randn(2, 3, 24, 24)
        got = EXPORTER.load_runner(path, options)(x.numpy())
    proto = onnx.load(str(path))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 24, 24]
    assert proto.opset_import[0].version == 13
    np.testing.assert_allclose(got, _eager(model, x), atol=1e-4)


def test_simplify_does_not_grow_the_graph(model, batch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with single_threaded():
        plain = EXPORTER.export(model, batch[:1], {"simplify": False}, tmp_path / "plain", METADATA)
        slim = EXPORTER.export(model, batch[:1], {"simplify": True}, tmp_path / "slim", METADATA)
    assert len(onnx.load(str(slim)).graph.node) <= len(onnx.load(str(plain)).graph.node)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"input_shape": [1, 1, 32, 32]}, "options.input_shape"),
        ({"dynamic_axes": {"input": {"7": "x"}}}, "options.dynamic_axes.input.7"),
        ({"dynamic_axes": {"output": {"batch": "x"}}}, "options.dynamic_axes.output.batch"),
        ({"opset_version": 42}, "options.opset_version"),
        ({"quantize": True}, "options.quantize"),
    ],
)
def test_bad_onnx_options_fail_before_writing_anything(model, batch, tmp_path: Path, options, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        EXPORTER.export(model, batch[:1], options, tmp_path / "out", METADATA)
    assert caught.value.field == field
    assert not (tmp_path / "out").exists()


def test_onnx_exporter_passes_the_plugin_author_contract_check(tmp_path: Path) -> None:
    path = check_exporter(EXPORTER, tmp_path)
    assert path.suffix == ".onnx"
