"""``onnx_int8``: the ONNX export with its weights quantised to int8 (onnxruntime dynamic quantisation).

Built on the built-in ``onnx`` format (``base_format="onnx"``): modelyard runs
the ONNX export first and verifies it against PyTorch under its own float32
policy; this exporter then receives that file (``base_file``) and rewrites it
with ``onnxruntime.quantization.quantize_dynamic``: convolution and matrix
weights stored as int8 (``QInt8``, about a quarter of the size), activations
quantised on the fly at run time. It runs offline and the result runs on
onnxruntime's CPU provider.

Quantisation changes the logits a little (typically a few hundredths), so
the file is verified under a lossy policy (``VERIFICATION``): top-1 agreement
with PyTorch on the run's images of at least 95 %, the logit difference
reported but not bounded. ``opset_version`` is the base ``onnx`` export's own
option, declared here under the same name so a request can set it (13 or
later: per-channel quantisation needs it).

The file keeps the ``modelyard.*`` metadata of the base file (the keys of
``modelyard.core.METADATA_KEYS``) and adds ``modelyard.quantization``.
Classification only.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelyard.core import METADATA_PREFIX, Exporter, ExportMetadata, VerificationPolicy, atomic_write_bytes

FILE_NAME = "model.int8.onnx"
QUANTIZATION_KEY = METADATA_PREFIX + "quantization"

OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "opset_version": {
            "type": "integer", "minimum": 13, "maximum": 20, "default": 17,
            "description": "ONNX opset of the base onnx export (and so of this file).",
        },
        "per_channel": {
            "type": "boolean", "default": False,
            "description": "One int8 scale per output column of matrix-multiplication weights (the classifier, a "
                           "ViT's layers) instead of one per tensor; convolutions stay per tensor in dynamic mode.",
        },
        "reduce_range": {
            "type": "boolean", "default": False,
            "description": "7-bit weights, for x86 CPUs without VNNI, where 8-bit products can saturate.",
        },
    },
}

#: Lossy: compared by agreement only. The tolerances are what the report shows beside the measured difference.
VERIFICATION = VerificationPolicy(atol=0.05, rtol=0.05, min_top1_agreement=0.95, lossy=True)


class _DropPreprocessingHint(logging.Filter):
    """onnxruntime's quantiser logs a root warning suggesting a pre-processing step: noise in the export log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _quiet_quantiser() -> Iterator[None]:
    root = logging.getLogger()
    hint = _DropPreprocessingHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def export_int8(model: Any, example_input: Any, options: dict[str, Any], out_dir: Path, metadata: ExportMetadata,
                *, base_file: Path) -> Path:
    """Quantise ``base_file`` (the verified ONNX export) into ``out_dir/model.int8.onnx``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".quantise-", dir=out_dir))
    try:
        quantised = scratch / FILE_NAME
        with _quiet_quantiser():
            quantize_dynamic(Path(base_file), quantised, weight_type=QuantType.QInt8,
                             per_channel=bool(options.get("per_channel", False)),
                             reduce_range=bool(options.get("reduce_range", False)))
        proto = onnx.load(str(quantised))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    del proto.metadata_props[:]
    stamped = {**metadata.key_values(), QUANTIZATION_KEY: json.dumps(
        {"method": "onnxruntime.quantize_dynamic", "weights": "int8",
         "per_channel": bool(options.get("per_channel", False)),
         "reduce_range": bool(options.get("reduce_range", False))})}
    for key, value in stamped.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    serialized = proto.SerializeToString()
    onnx.checker.check_model(serialized)
    target = out_dir / FILE_NAME
    atomic_write_bytes(target, serialized)
    return target


def load_int8_runner(path: Path, options: dict[str, Any]) -> Callable[[Any], Any]:
    """``predict(batch float32 NCHW) -> logits float32`` through onnxruntime's CPU provider."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict(batch: Any) -> Any:
        return np.asarray(session.run(None, {input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0],
                          dtype=np.float32)

    return predict


def usage_snippet(model_file: str) -> str:
    """The bundle README's lines: run the int8 file on ``x`` (preprocessed ``[C, H, W]``), leaving ``outputs``."""
    return (
        "import onnxruntime as ort  # int8 weights (dynamic quantisation): onnxruntime's CPU provider runs it\n"
        f"session = ort.InferenceSession({model_file!r}, providers=[\"CPUExecutionProvider\"])\n"
        "outputs = session.run(None, {session.get_inputs()[0].name: x[None].astype(np.float32)})\n"
    )


EXPORTER = Exporter(
    id="onnx_int8",
    name="ONNX int8 (dynamic quantisation)",
    extension=".int8.onnx",
    options_schema=OPTIONS_SCHEMA,
    export=export_int8,
    load_runner=load_int8_runner,
    description="The ONNX export with int8 weights (onnxruntime quantize_dynamic): about 4x smaller, for CPUs; "
                "verified by top-1 agreement (at least 95 %).",
    tasks=("classification",),
    verification=VERIFICATION,
    base_format="onnx",
    usage_snippet=usage_snippet,
)
