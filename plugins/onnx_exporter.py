"""``onnx``: export to ONNX, optionally slimmed (onnxslim) and in float16.

We use torch's TorchScript-based exporter (``dynamo=False``): it runs offline
without onnxscript, is fast, honours ``dynamic_axes`` and names the graph's
input ``input`` and its outputs as the task says (``ExportMetadata.outputs``:
``output`` for classification; ``boxes``, ``scores``, ``labels`` for object
detection). torch warns that it is deprecated; when it is removed, switch to
``dynamo=True`` with ``dynamic_shapes``.

The ``dynamic_axes`` option is classification's (tensors ``input`` and
``output``). A task with its own outputs fixes the dynamic axes itself
(detection: one image in, the box count dynamic); the option must then keep
its default (which is not applied), and anything else is refused.

The file carries what a deployment needs in ``metadata_props``, under the
keys of ``modelyard.core.METADATA_KEYS`` (``ExportMetadata.key_values()``):
``modelyard.classes``, ``modelyard.input_size``, ``modelyard.mean``,
``modelyard.std`` (JSON), ``modelyard.architecture``, ``modelyard.run_id``,
``modelyard.channels``, ``modelyard.task``, and ``ExportMetadata.extra``: the
checkpoint and the task's own facts (``modelyard.score_threshold`` for
detection).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.core import Exporter, ExportMetadata, ValidationError, atomic_write_bytes, hookimpl, resolve_options

INPUT_NAME = "input"
OUTPUT_NAME = "output"
FILE_NAME = "model.onnx"

_AXES_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}

OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "opset_version": {
            "type": "integer",
            "minimum": 9,
            "maximum": 20,
            "default": 17,
            "description": "ONNX opset to target.",
        },
        "input_shape": {
            "type": ["array", "null"],
            "items": {"type": "integer", "minimum": 1},
            "minItems": 4,
            "maxItems": 4,
            "default": None,
            "description": "[batch, channels, height, width] traced; null takes the run's input size.",
        },
        "dynamic_axes": {
            "type": "object",
            "additionalProperties": False,
            "properties": {INPUT_NAME: _AXES_SCHEMA, OUTPUT_NAME: _AXES_SCHEMA},
            "default": {INPUT_NAME: {"0": "batch_size"}, OUTPUT_NAME: {"0": "batch_size"}},
            "description": "Axes (by index, as strings) left symbolic, e.g. the batch size.",
        },
        "simplify": {"type": "boolean", "default": True, "description": "Simplify the graph with onnxslim."},
        "fp16": {"type": "boolean", "default": False, "description": "Store weights and input/output as float16."},
    },
}


def metadata_props(metadata: ExportMetadata) -> dict[str, str]:
    """The ``modelyard.*`` key/value strings stored in an exported file (``METADATA_KEYS``, then ``extra``)."""
    return metadata.key_values()


def _dynamic_axes(option: dict[str, dict[str, str]], rank: dict[str, int]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for tensor, mapping in option.items():
        axes[tensor] = {}
        for index, label in mapping.items():
            if not index.isdigit() or int(index) >= rank[tensor]:
                raise ValidationError(
                    f"dynamic_axes.{tensor} names axis {index!r}; {tensor} has axes 0..{rank[tensor] - 1}",
                    field=f"options.dynamic_axes.{tensor}.{index}",
                )
            axes[tensor][int(index)] = label
    return axes


def _task_axes(option: dict[str, dict[str, str]], metadata: ExportMetadata) -> dict[str, dict[int, str]]:
    """The dynamic axes of a task with its own outputs; the ``dynamic_axes`` option must be left as it is."""
    if option != OPTIONS_SCHEMA["properties"]["dynamic_axes"]["default"]:
        raise ValidationError(
            f"dynamic_axes applies to classification's input/output; a {metadata.task} export fixes its own "
            f"(outputs {', '.join(metadata.output_names)}): leave the option out",
            field="options.dynamic_axes",
        )
    axes = {name: dict(axis) for name, axis in metadata.outputs.items() if axis}
    if metadata.input_axes:
        axes[INPUT_NAME] = dict(metadata.input_axes)
    return axes


def _example(example_input: Any, input_shape: list[int] | None) -> Any:
    import torch

    if input_shape is None:
        return example_input
    if input_shape[1] != example_input.shape[1]:
        raise ValidationError(
            f"input_shape has {input_shape[1]} channels but the model takes {example_input.shape[1]}",
            field="options.input_shape",
        )
    return torch.zeros(input_shape, dtype=example_input.dtype)


def export_onnx(
    model: Any, example_input: Any, options: dict[str, Any], out_dir: Path, metadata: ExportMetadata
) -> Path:
    """Write ``out_dir/model.onnx``: trace, check, optionally slim and halve, then stamp metadata."""
    import onnx
    import torch

    options = resolve_options(EXPORTER, options)
    example = _example(example_input, options["input_shape"])
    if metadata.default_signature:
        axes = _dynamic_axes(options["dynamic_axes"], {INPUT_NAME: example.dim(), OUTPUT_NAME: 2})
    else:
        axes = _task_axes(options["dynamic_axes"], metadata)
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the legacy exporter's own deprecation notices (see the module docstring)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message="The feature will be removed")
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=metadata.output_names,
                dynamic_axes=axes or None,
                opset_version=options["opset_version"],
                do_constant_folding=True,
            )
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    if options["simplify"]:
        import onnxslim

        proto = onnxslim.slim(proto)
    if options["fp16"]:
        from onnxconverter_common import float16

        proto = float16.convert_float_to_float16(proto, keep_io_types=False)
    del proto.metadata_props[:]
    for key, value in metadata_props(metadata).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    serialized = proto.SerializeToString()  # once: the checker takes the bytes that are written
    onnx.checker.check_model(serialized)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / FILE_NAME
    atomic_write_bytes(target, serialized)
    return target


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}


def load_onnx_runner(path: Path, options: dict[str, Any], device: str = "cpu") -> Callable[[Any], Any]:
    """``predict(batch float32 NCHW)`` through onnxruntime on the CPU, or on ``cuda:N`` (CUDA provider).

    A graph with one output answers with it as float32 (classification's
    logits); one with several answers with the list of them in graph order,
    floating ones as float32 and integer ones as they are (detection's boxes,
    scores, int64 labels). The input is cast to whatever the graph declares
    (float16 for ``fp16`` exports).
    """
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=_providers(device, ort.get_available_providers()))
    input_meta = session.get_inputs()[0]
    dtype = np.float16 if input_meta.type == "tensor(float16)" else np.float32

    def as_float32(array: Any) -> Any:
        array = np.asarray(array)
        return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array

    def predict(batch: Any) -> Any:
        outputs = session.run(None, {input_meta.name: np.ascontiguousarray(batch, dtype=dtype)})
        if len(outputs) == 1:
            return np.asarray(outputs[0], dtype=np.float32)
        return [as_float32(output) for output in outputs]

    return predict


def _providers(device: str, available: list[str]) -> list[Any]:
    """onnxruntime's providers for a device id (``cpu`` or ``cuda:N``); a clear error where CUDA is missing."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if not device.startswith("cuda:") or not device[5:].isdigit():
        raise ValidationError(f"device must be 'cpu' or 'cuda:N', not {device!r}", field="device")
    if "CUDAExecutionProvider" not in available:
        raise ValidationError("this onnxruntime has no CUDA provider (install onnxruntime-gpu); use device 'cpu'",
                              field="device", details={"available_providers": available})
    return [("CUDAExecutionProvider", {"device_id": int(device[5:])}), "CPUExecutionProvider"]


EXPORTER = Exporter(
    id="onnx",
    name="ONNX",
    extension=".onnx",
    options_schema=OPTIONS_SCHEMA,
    export=export_onnx,
    load_runner=load_onnx_runner,
    description="Open Neural Network Exchange, for onnxruntime, TensorRT, OpenVINO and friends.",
    tasks=("classification", "object_detection"),
)


@hookimpl
def register_exporters(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(EXPORTER)
