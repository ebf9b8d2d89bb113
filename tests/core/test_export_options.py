"""Export options: defaults from the exporter's JSON schema, and errors naming ``options.<name>``."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.core import Exporter
from modelyard.core.errors import ValidationError
from modelyard.core.export_options import option_defaults, resolve_options
from modelyard.plugins.onnx_exporter import EXPORTER as ONNX


def _exporter(properties: dict[str, Any], **schema: Any) -> Exporter:
    return Exporter(
        id="fmt", name="Fmt", extension=".fmt", options_schema={"type": "object", "properties": properties, **schema},
        export=None, load_runner=None,  # type: ignore[arg-type]
    )


def test_empty_options_give_the_onnx_defaults_of_the_design() -> None:
    assert resolve_options(ONNX, {}) == {
        "opset_version": 17,
        "input_shape": None,
        "dynamic_axes": {"input": {"0": "batch_size"}, "output": {"0": "batch_size"}},
        "simplify": True,
        "fp16": False,
    }
    assert resolve_options(ONNX, None) == resolve_options(ONNX, {})


def test_the_reference_request_options_are_accepted_as_sent() -> None:
    sent = {
        "opset_version": 17,
        "input_shape": [1, 3, 224, 224],
        "dynamic_axes": {"input": {"0": "batch_size"}, "output": {"0": "batch_size"}},
        "simplify": True,
    }
    assert resolve_options(ONNX, sent) == {**sent, "fp16": False}


def test_defaults_are_copies_that_callers_may_mutate() -> None:
    first = resolve_options(ONNX, {})
    first["dynamic_axes"]["input"]["0"] = "changed"
    assert resolve_options(ONNX, {})["dynamic_axes"]["input"]["0"] == "batch_size"
    assert option_defaults(ONNX.options_schema)["dynamic_axes"]["input"]["0"] == "batch_size"


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"opset": 17}, "options.opset", "Unknown option 'opset' for export format 'onnx'. Known: dynamic_axes, fp16, input_shape, opset_version, simplify"),
        ({"opset_version": "17"}, "options.opset_version", "options.opset_version must be integer, got string '17'"),
        ({"opset_version": 17.0}, "options.opset_version", "options.opset_version must be integer, got number 17.0"),
        ({"opset_version": True}, "options.opset_version", "options.opset_version must be integer, got boolean True"),
        ({"opset_version": 99}, "options.opset_version", "options.opset_version must be <= 20, got 99"),
        ({"opset_version": 3}, "options.opset_version", "options.opset_version must be >= 9, got 3"),
        ({"simplify": "yes"}, "options.simplify", "options.simplify must be boolean, got string 'yes'"),
        ({"input_shape": [1, 3, 224]}, "options.input_shape", "options.input_shape must have at least 4 items, got 3"),
        ({"input_shape": [1, 3, 224, 224, 1]}, "options.input_shape", "options.input_shape must have at most 4 items, got 5"),
        ({"input_shape": [1, 3, 0, 224]}, "options.input_shape.2", "options.input_shape.2 must be >= 1, got 0"),
        ({"input_shape": "1x3x224x224"}, "options.input_shape", "options.input_shape must be array or null, got string '1x3x224x224'"),
        ({"dynamic_axes": {"inputs": {}}}, "options.dynamic_axes.inputs", "options.dynamic_axes has no key 'inputs'. Known: input, output"),
        ({"dynamic_axes": {"input": {"0": 1}}}, "options.dynamic_axes.input.0", "options.dynamic_axes.input.0 must be string, got integer 1"),
    ],
)
def test_bad_onnx_options_name_the_offending_field(options: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        resolve_options(ONNX, options)
    assert caught.value.field == field
    assert caught.value.message == message


def test_options_must_be_an_object() -> None:
    with pytest.raises(ValidationError, match="options must be an object, got list") as caught:
        resolve_options(ONNX, [1, 2])  # type: ignore[arg-type]
    assert caught.value.field == "options"


def test_enum_number_and_required_keywords_are_enforced() -> None:
    exporter = _exporter(
        {"mode": {"type": "string", "enum": ["fast", "exact"]}, "scale": {"type": "number", "minimum": 0, "default": 1}},
        required=["mode"],
    )
    assert resolve_options(exporter, {"mode": "fast", "scale": 2}) == {"mode": "fast", "scale": 2}
    assert resolve_options(exporter, {"mode": "exact", "scale": 0.5})["scale"] == 0.5
    with pytest.raises(ValidationError, match=r"options.mode must be one of \['fast', 'exact'\], got 'slow'"):
        resolve_options(exporter, {"mode": "slow"})
    with pytest.raises(ValidationError, match="Option 'mode' is required"):
        resolve_options(exporter, {})
    with pytest.raises(ValidationError, match="options.scale must be >= 0, got -1"):
        resolve_options(exporter, {"mode": "fast", "scale": -1})


def test_exporter_without_options_refuses_any_option() -> None:
    with pytest.raises(ValidationError, match=r"Unknown option 'x' for export format 'fmt'. Known: \(none\)"):
        resolve_options(_exporter({}), {"x": 1})
