"""The ``?bundle=zip`` download: the model plus what a deployment needs to feed it.

``labels.json`` (class names in output order), ``preprocessing.json`` (input
size, channels, mean, std and the exact resize/scale steps) and a short
``README.txt`` with a minimal script. Built once per export, atomically, next
to the model file.

The snippet is the shared preprocessing, then the format's lines that run the
file (``outputs``: its answers for the image), then the task's lines that read
them. The format's lines are the exporter's own (``Exporter.usage_snippet``)
when it declares them; otherwise a default per runtime: onnxruntime for
``onnx`` and any ``.onnx`` file, ``torch.jit.load`` for ``torchscript``, and
for any other format a neutral note saying how to build the input and read
the outputs (never another runtime's code). A classifier's README of the
built-in formats is the logits snippet it always was; a task with other
outputs wrote its lines at export time (``usage.json``, from
``TaskRuntime.export_usage``; detection draws the boxes with Pillow).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..jsonio import atomic_write_bytes
from ..records import DeploymentMetadata, Export, Verification

if TYPE_CHECKING:
    from ..plugin_types import Exporter

log = logging.getLogger(__name__)

BUNDLE_SUFFIX = "-bundle.zip"
#: The task's usage lines for the README (``TaskRuntime.export_usage``), written by the worker beside the model.
USAGE_FILE = "usage.json"

#: Usage snippets: the same Pillow/numpy preprocessing (preprocessing.json), then one runtime each.
_SNIPPET_PREPROCESSING = """\
prep = json.load(open("preprocessing.json"))
labels = json.load(open("labels.json"))
h, w = prep["input_size"]
img = ImageOps.exif_transpose(Image.open("image.jpg")).convert("RGB" if prep["channels"] == 3 else "L")
img = img.resize((w, h), Image.BILINEAR, reducing_gap=prep["pillow"]["reducing_gap"])
x = np.asarray(img, dtype=np.float32) / 255.0
x = x.reshape(h, w, prep["channels"]).transpose(2, 0, 1)
x = (x - np.array(prep["mean"], np.float32)[:, None, None]) / np.array(prep["std"], np.float32)[:, None, None]
"""


def _snippet(runtime_import: str, inference: str, extra_imports: str = "") -> str:
    """A runnable script (``{model}`` still to fill in) around the shared preprocessing."""
    runtime_line = f"{runtime_import}\n" if runtime_import else ""
    imports = f"import json\nimport numpy as np\n{runtime_line}from PIL import Image, ImageOps\n"
    if extra_imports:
        imports += extra_imports.rstrip("\n") + "\n"
    return f"{imports}\n{_SNIPPET_PREPROCESSING}{inference}"


_ONNX_SNIPPET = _snippet("import onnxruntime as ort", """\
session = ort.InferenceSession("{model}", providers=["CPUExecutionProvider"])
inp = session.get_inputs()[0]
dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
logits = session.run(None, {{inp.name: x[None].astype(dtype)}})[0][0]
print(labels[int(np.argmax(logits))])
""")

_TORCHSCRIPT_SNIPPET = _snippet("import torch", """\
model = torch.jit.load("{model}").eval()
with torch.no_grad():
    logits = model(torch.from_numpy(x[None]))[0]
print(labels[int(logits.argmax())])
""")


#: The format's lines that run the file on ``x`` and leave its answers in ``outputs`` (a list of numpy arrays).
_RUN_OUTPUTS = {
    "onnx": """\
session = ort.InferenceSession("{model}", providers=["CPUExecutionProvider"])
inp = session.get_inputs()[0]
dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
outputs = session.run(None, {{inp.name: x[None].astype(dtype)}})
""",
    "torchscript": """\
model = torch.jit.load("{model}").eval()
with torch.no_grad():
    result = model(torch.from_numpy(x[None]))
outputs = [t.numpy() for t in (result if isinstance(result, tuple) else (result,))]
""",
}
_RUNTIME_IMPORTS = {"onnx": "import onnxruntime as ort", "torchscript": "import torch"}

#: Classification's lines after the format's: the top class of the logits.
_CLASSIFICATION_CODE = """\
logits = outputs[0][0]
print(labels[int(np.argmax(logits))])
"""

#: For a format without a snippet of its own and no default runtime: what to do instead of running it.
_NEUTRAL_RUN = """\
# No runnable example for the '{format}' format: its exporter declares no usage snippet.
# Load {model} with the runtime that reads this format and run it on x[None]
# (float32, [1, C, H, W], the preprocessing above, from preprocessing.json). Its outputs, in graph order,
# are described by preprocessing.json's "output"; class ids index labels.json.
"""


def task_usage(folder: Path) -> dict[str, str] | None:
    """The task's usage lines written at export time (``usage.json``), or ``None`` (a classifier's export)."""
    path = folder / USAGE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return {key: str(value) for key, value in data.items()} if isinstance(data, dict) else None


def default_runtime(record_format: str, model_name: str) -> str | None:
    """The runtime whose snippet a format without its own shows: ``onnx``, ``torchscript`` or ``None`` (neutral)."""
    if record_format == "torchscript":
        return "torchscript"
    if record_format == "onnx" or model_name.lower().endswith(".onnx"):
        return "onnx"
    return None


def usage_snippet(record_format: str, model_name: str, usage: dict[str, str] | None,
                  exporter: Exporter | None = None) -> str:
    """The README's script for this format and task (``image.jpg`` in, printed answer out).

    ``exporter`` is the format's exporter when it is installed: its
    ``usage_snippet(model_name)`` gives the lines that run the file.
    """
    own = None
    if exporter is not None and exporter.usage_snippet is not None:
        try:
            own = exporter.usage_snippet(model_name)
        except Exception:  # the plugin's bug must not break the download: the default instead, logged
            log.exception("the %s exporter's usage_snippet failed; the README shows the default", exporter.id)
        if own is not None and not isinstance(own, str):
            log.error("the %s exporter's usage_snippet returned %s, not str; ignored", exporter.id, type(own).__name__)
            own = None
    runtime = default_runtime(record_format, model_name)
    if own is None and runtime is not None and usage is None:
        return (_TORCHSCRIPT_SNIPPET if runtime == "torchscript" else _ONNX_SNIPPET).format(model=model_name)
    if own is not None:
        imports, run = "", str(own).rstrip("\n") + "\n"
    elif runtime is not None:
        imports, run = _RUNTIME_IMPORTS[runtime], _RUN_OUTPUTS[runtime].format(model=model_name)
    else:
        # a note, not code: nothing below it could run (there is no ``outputs``)
        return _snippet("", "", (usage or {}).get("imports", "")) + _NEUTRAL_RUN.format(format=record_format,
                                                                                        model=model_name)
    code = usage["code"] if usage is not None else _CLASSIFICATION_CODE
    return _snippet(imports, run, (usage or {}).get("imports", "")) + code


def preprocessing_document(metadata: DeploymentMetadata, usage: dict[str, str] | None = None) -> dict[str, Any]:
    """How to turn an image file into the model's input, exactly as training validated it.

    ``task`` (and the task's own export facts, e.g. detection's
    ``score_threshold``) say how to read the outputs: ``modelyard.predict``
    loads a bundle of any format from this file and ``labels.json`` alone.
    """
    document: dict[str, Any] = {
        "task": metadata.task,
        "input_size": list(metadata.input_size),
        "channels": metadata.channels,
        "color_mode": "RGB" if metadata.channels == 3 else "L",
        "resize": "bilinear, straight to input_size (no crop, no aspect ratio kept)",
        "pillow": {
            "exif_transpose": True,
            "resample": "BILINEAR",
            "reducing_gap": 3.0,
            "jpeg_draft": "Image.draft(mode, (w, h)) first when a JPEG is at least 2x input_size on both sides",
        },
        "scale": 1.0 / 255.0,
        "mean": list(metadata.mean),
        "std": list(metadata.std),
        "layout": "NCHW",
        "formula": "x = (pixel / 255 - mean[c]) / std[c]",
        "output": usage["output"] if usage else "logits, one per class in labels.json order; softmax gives probabilities",
    }
    for key, value in metadata.export.items():
        document.setdefault(key, value)
    return document


def readme_text(record: Export, metadata: DeploymentMetadata, model_name: str, usage: dict[str, str] | None = None,
                exporter: Exporter | None = None) -> str:
    snippet = usage_snippet(record.format, model_name, usage, exporter)
    verification = record.verification
    if verification is None:
        checked = "Not verified against PyTorch."
    elif usage is not None and usage.get("verification"):
        checked = (f"Verification against PyTorch on {verification.images} images: {usage['verification']}, "
                   f"passed: {verification.passed}.")
    else:
        checked = (f"Verification against PyTorch on {verification.images} images: "
                   f"top-1 agreement {verification.top1_agreement}, max abs logit difference {verification.max_abs_diff}, "
                   f"passed: {verification.passed}.")
    if verification is not None:
        checked += _policy_note(verification)
    lines = [
        f"{model_name}: {metadata.architecture} exported by modelyard as {record.format}",
        f"run {metadata.run_id} ({metadata.checkpoint} checkpoint), {len(metadata.classes)} classes.",
        "",
        "Files: labels.json (class names, output order), preprocessing.json (how to build the input).",
        checked,
        "",
        "Minimal usage:",
        "",
        snippet,
    ]
    return "\n".join(lines)


def _policy_note(verification: Verification) -> str:
    """The README's words on a lossy policy and on the base export a derived file was made from."""
    note = ""
    policy = verification.policy
    if policy is not msgspec.UNSET and policy.lossy is True:
        note += " The format is lossy: compared by agreement only (the difference is reported, not bounded)."
    base = verification.base
    if base is not msgspec.UNSET:
        note += (f" Made from the {base.format} export, itself verified against PyTorch on {base.images} images: "
                 f"passed: {base.passed}.")
    return note


def build_bundle(model_path: Path, record: Export, target: Path, exporter: Exporter | None = None) -> Path:
    """Write the ZIP bundle of a finished export to ``target`` (atomically) and return it.

    ``exporter`` is the record's format when it is installed (its README snippet); without it, the default.
    """
    metadata = record.metadata
    if metadata is None:
        raise ValueError(f"export {record.id} has no deployment metadata (it did not finish)")
    usage = task_usage(model_path.parent)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(model_path, arcname=model_path.name)
        archive.writestr("labels.json", json.dumps(list(metadata.classes), indent=2, ensure_ascii=False) + "\n")
        archive.writestr("preprocessing.json", json.dumps(preprocessing_document(metadata, usage), indent=2) + "\n")
        archive.writestr("README.txt", readme_text(record, metadata, model_path.name, usage, exporter))
    atomic_write_bytes(target, buffer.getvalue())
    return target
