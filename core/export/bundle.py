"""The ``?bundle=zip`` download: the model plus what a deployment needs to feed it.

``labels.json`` (class names in output order), ``preprocessing.json`` (input
size, channels, mean, std and the exact resize/scale steps) and a short
``README.txt`` with a minimal onnxruntime (or TorchScript) snippet. Built once
per export, atomically, next to the model file.
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


def _snippet(runtime_import: str, inference: str) -> str:
    """A runnable script (``{model}`` still to fill in) around the shared preprocessing."""
    imports = f"import json\nimport numpy as np\n{runtime_import}\nfrom PIL import Image, ImageOps\n"
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


def preprocessing_document(metadata: DeploymentMetadata) -> dict[str, Any]:
    """How to turn an image file into the model's input, exactly as training validated it."""
    return {
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
        "output": "logits, one per class in labels.json order; softmax gives probabilities",
    }


def readme_text(record: Export, metadata: DeploymentMetadata, model_name: str) -> str:
    snippet = (_TORCHSCRIPT_SNIPPET if record.format == "torchscript" else _ONNX_SNIPPET).format(model=model_name)
    verification = record.verification
    checked = (f"Verification against PyTorch on {verification.images} images: "
               f"top-1 agreement {verification.top1_agreement}, max abs logit difference {verification.max_abs_diff}, "
               f"passed: {verification.passed}." if verification else "Not verified against PyTorch.")
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
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(model_path, arcname=model_path.name)
        archive.writestr("labels.json", json.dumps(list(metadata.classes), indent=2, ensure_ascii=False) + "\n")
        archive.writestr("preprocessing.json", json.dumps(preprocessing_document(metadata), indent=2) + "\n")
        archive.writestr("README.txt", readme_text(record, metadata, model_path.name))
    atomic_write_bytes(target, buffer.getvalue())
    return target
