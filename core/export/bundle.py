"""The ``?bundle=zip`` download: the model plus what a deployment needs to feed it.

``labels.json`` (class names in output order), ``preprocessing.json`` (input
size, channels, mean, std and the exact resize/scale steps) and a short
``README.txt`` with a minimal onnxruntime (or TorchScript) snippet. Built once
per export, atomically, next to the model file.

The snippet is the shared preprocessing, then the format's lines that run the
file (``outputs``: its answers for the image), then the task's lines that read
them. A classifier's README is the logits snippet it always was; a task with
other outputs wrote its lines at export time (``usage.json``, from
``TaskRuntime.export_usage``; detection draws the boxes with Pillow).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from ..jsonio import atomic_write_bytes
from ..records import DeploymentMetadata, Export

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
    imports = f"import json\nimport numpy as np\n{runtime_import}\nfrom PIL import Image, ImageOps\n"
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


def task_usage(folder: Path) -> dict[str, str] | None:
    """The task's usage lines written at export time (``usage.json``), or ``None`` (a classifier's export)."""
    path = folder / USAGE_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return {key: str(value) for key, value in data.items()} if isinstance(data, dict) else None


def usage_snippet(record_format: str, model_name: str, usage: dict[str, str] | None) -> str:
    """The README's runnable script for this format and task (``image.jpg`` in, printed answer out)."""
    fmt = "torchscript" if record_format == "torchscript" else "onnx"
    if usage is None:
        return (_TORCHSCRIPT_SNIPPET if fmt == "torchscript" else _ONNX_SNIPPET).format(model=model_name)
    script = _snippet(_RUNTIME_IMPORTS[fmt], _RUN_OUTPUTS[fmt].format(model=model_name), usage.get("imports", ""))
    return script + usage["code"]


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


def readme_text(record: Export, metadata: DeploymentMetadata, model_name: str, usage: dict[str, str] | None = None) -> str:
    snippet = usage_snippet(record.format, model_name, usage)
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


def build_bundle(model_path: Path, record: Export, target: Path) -> Path:
    """Write the ZIP bundle of a finished export to ``target`` (atomically) and return it."""
    metadata = record.metadata
    if metadata is None:
        raise ValueError(f"export {record.id} has no deployment metadata (it did not finish)")
    usage = task_usage(model_path.parent)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(model_path, arcname=model_path.name)
        archive.writestr("labels.json", json.dumps(list(metadata.classes), indent=2, ensure_ascii=False) + "\n")
        archive.writestr("preprocessing.json", json.dumps(preprocessing_document(metadata, usage), indent=2) + "\n")
        archive.writestr("README.txt", readme_text(record, metadata, model_path.name, usage))
    atomic_write_bytes(target, buffer.getvalue())
    return target
