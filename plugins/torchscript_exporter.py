"""``torchscript``: a traced TorchScript archive, loadable with ``torch.jit.load`` (C++ or Python).

The metadata travels inside the archive as the extra file ``modelyard.json``
(read it with ``torch.jit.load(path, _extra_files={"modelyard.json": ""})``).
For a task with its own outputs it also names the task and the outputs
(``task``, ``outputs``: name -> dynamic axes, in the order of the returned
tuple, ``input_axes``); a classifier's document is the one it always was.
The archive is traced, so ``module(images)`` returns what the task's export
module returns: logits, or detection's ``(boxes, scores, labels)`` tuple for
one image.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from modelyard.core import Exporter, ExportMetadata, atomic_write_bytes, hookimpl, resolve_options

CLASSIFICATION = "classification"

#: TorchScript is deprecated in torch 2.14 in favour of torch.export; the format still loads
#: everywhere libtorch runs, so we silence exactly those notices around our own calls.
_JIT_DEPRECATION = r"`torch\.jit\.\w+` is deprecated"

FILE_NAME = "model.pt"
METADATA_FILE = "modelyard.json"

OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "freeze": {
            "type": "boolean",
            "default": False,
            "description": "Inline the weights as constants and fold conv+batchnorm (torch.jit.freeze).",
        },
    },
}


def metadata_json(metadata: ExportMetadata) -> str:
    """The ``modelyard.json`` text stored in the archive."""
    data = asdict(metadata)
    data["input_size"] = list(metadata.input_size)
    if metadata.default_signature and metadata.task == CLASSIFICATION:
        for key in ("task", "outputs", "input_axes"):
            data.pop(key)
    return json.dumps(data)


def export_torchscript(
    model: Any, example_input: Any, options: dict[str, Any], out_dir: Path, metadata: ExportMetadata
) -> Path:
    """Trace ``model`` on ``example_input`` and write ``out_dir/model.pt`` with the metadata inside."""
    import torch

    options = resolve_options(EXPORTER, options)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_JIT_DEPRECATION)
            traced = torch.jit.trace(model, (example_input,))
            if options["freeze"]:
                # not optimize_for_inference: its MKLDNN-specialised graphs cannot be loaded back
                traced = torch.jit.freeze(traced)
            buffer = io.BytesIO()
            torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: metadata_json(metadata)})
    finally:
        model.train(was_training)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / FILE_NAME
    atomic_write_bytes(target, buffer.getvalue())
    return target


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``modelyard.json`` stored in a TorchScript archive."""
    import torch

    extra = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATION)
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return dict(json.loads(extra[METADATA_FILE]))


def load_torchscript_runner(path: Path, options: dict[str, Any]) -> Callable[[Any], Any]:
    """``predict(batch float32 NCHW numpy)`` through ``torch.jit.load``.

    One tensor out: float32 numpy (classification's logits); a tuple out: the
    list of its tensors as numpy, floating ones as float32 (detection's boxes,
    scores, int64 labels).
    """
    import numpy as np
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_DEPRECATION)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def as_numpy(tensor: Any) -> Any:
        array = tensor.numpy()
        return array.astype(np.float32) if tensor.is_floating_point() else array

    def predict(batch: Any) -> Any:
        with torch.no_grad():
            output = module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        if isinstance(output, (tuple, list)):
            return [as_numpy(t) for t in output]
        return output.numpy().astype(np.float32)

    return predict


EXPORTER = Exporter(
    id="torchscript",
    name="TorchScript",
    extension=".pt",
    options_schema=OPTIONS_SCHEMA,
    export=export_torchscript,
    load_runner=load_torchscript_runner,
    description="A traced TorchScript module for torch.jit.load / libtorch, no Python model code needed.",
    tasks=("classification", "object_detection"),
)


@hookimpl
def register_exporters(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(EXPORTER)
