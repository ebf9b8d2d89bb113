"""Import -> split -> train -> evaluate -> export -> deploy, through the API with real worker processes.

Generated shape images are imported and split through the API; a tiny
``simple_cnn`` is trained by the training worker,
evaluated (``best`` and ``last``) by evaluation workers and exported (ONNX and
TorchScript) by export workers. The downloaded ONNX file is then run with
onnxruntime after preprocessing implemented here, independently, with Pillow
and numpy from nothing but the file's own metadata: its predictions must be the
evaluation's, image by image. The aggregate metrics are re-computed with numpy
from the per-image results the API serves.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from modelyard.core.sample_data import generate_shapes
from tests.conftest import TINY_TRAINING_CONFIG
from tests.helpers.run_fixtures import wait_for

TIMEOUT_S = 240
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def _wait(client, url: str, active=("pending", "running")) -> dict:
    def finished():
        data = client.get(url).json()["data"]
        return data if data["status"] not in active else None

    return wait_for(finished, TIMEOUT_S, interval=0.5, what=url)


def _all_results(client, project: str, eval_id: str) -> list[dict]:
    page = client.get(f"/api/evaluation/{project}/{eval_id}/results", params={"page_size": 500}).json()["data"]
    assert page["total"] == len(page["items"])
    return page["items"]


def _preprocess_from_metadata(path: Path, props: dict[str, str]) -> np.ndarray:
    """What a deployment does: RGB, bilinear resize to modelyard.input_size, /255, (x - mean) / std, NCHW."""
    height, width = json.loads(props["modelyard.input_size"])
    mean = np.array(json.loads(props["modelyard.mean"]), dtype=np.float32)
    std = np.array(json.loads(props["modelyard.std"]), dtype=np.float32)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    return ((pixels / 255.0 - mean) / std).transpose(2, 0, 1)[None]


def _check_metrics_against_numpy(metrics: dict, items: list[dict]) -> None:
    labels = metrics["confusion_matrix"]["labels"]
    gt = np.array([i["ground_truth"]["class_id"] for i in items])
    pred = np.array([i["prediction"]["class_id"] for i in items])
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(confusion, (gt, pred), 1)
    assert metrics["confusion_matrix"]["matrix"] == confusion.tolist()
    assert metrics["accuracy"] == pytest.approx((gt == pred).mean(), abs=1e-6)
    assert metrics["loss"] == pytest.approx(np.mean([i["loss"] for i in items]), abs=1e-5)
    for c, name in enumerate(labels):
        tp, predicted, support = confusion[c, c], confusion[:, c].sum(), confusion[c].sum()
        assert metrics["per_class"][name]["support"] == support
        assert metrics["per_class"][name]["recall"] == pytest.approx(tp / support if support else 0.0, abs=1e-6)
        assert metrics["per_class"][name]["precision"] == pytest.approx(tp / predicted if predicted else 0.0, abs=1e-6)


def test_train_evaluate_export_and_deploy_give_the_same_predictions(client, services, import_root: Path, tmp_path: Path) -> None:
    project = client.post("/api/projects", json={"name": "End to end"}).json()["data"]["id"]
    generate_shapes(import_root / "shapes", per_class=10, size=20, seed=7, shapes=("circle", "square", "triangle"))
    imported = client.post(f"/api/datasets/{project}/import/local", json={"path": str(import_root / "shapes")})
    assert imported.status_code == 200 and imported.json()["data"]["imported"] == 30, imported.text
    split = client.post(f"/api/splits/{project}", json={"name": "60-20-20", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}})
    assert split.status_code in (200, 201), split.text
    created = client.post(f"/api/training/{project}/experiments", json={"name": "e2e", "config": TINY_TRAINING_CONFIG})
    assert created.status_code == 201, created.text
    experiment = created.json()["data"]
    started = client.post(f"/api/training/{project}/experiments/{experiment['id']}/run")
    assert started.status_code == 201, started.text
    run_id = started.json()["data"]["run_id"]
    run = _wait(client, f"/api/training/{project}/runs/{run_id}", active=("pending", "running"))
    assert run["status"] == "completed", run["error"]

    ids = {"experiment_id": experiment["id"], "run_id": run_id}
    evals = {
        checkpoint: client.post(f"/api/evaluation/{project}",
                                json={**ids, "checkpoint": checkpoint, "split_subset": ["train", "val", "test"]}).json()["data"]["id"]
        for checkpoint in ("best", "last")
    }
    exports = {
        fmt: client.post(f"/api/export/{project}", json={**ids, "checkpoint": "best", "format": fmt}).json()["data"]["id"]
        for fmt in ("onnx", "torchscript")
    }
    evaluations = {c: _wait(client, f"/api/evaluation/{project}/{e}") for c, e in evals.items()}
    finished_exports = {f: _wait(client, f"/api/export/{project}/{e}") for f, e in exports.items()}
    for record in [*evaluations.values(), *finished_exports.values()]:
        assert record["status"] == "completed", record["error"]

    results = {c: {i["filename"]: i for i in _all_results(client, project, e)} for c, e in evals.items()}
    for checkpoint, record in evaluations.items():
        assert record["num_images"] == 30 and record["checkpoint"] == checkpoint
        _check_metrics_against_numpy(record["metrics"], list(results[checkpoint].values()))

    onnx_bytes = client.get(f"/api/export/{project}/{exports['onnx']}/download").content
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(onnx_bytes)
    props = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    classes = json.loads(props["modelyard.classes"])
    assert props["modelyard.run_id"] == run_id and props["modelyard.architecture"] == "simple_cnn"
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    images_dir = services.workspace.images_dir(project)
    best = results["best"]
    assert len(best) == 30
    for filename, expected in best.items():
        logits = session.run(None, {input_name: _preprocess_from_metadata(images_dir / filename, props)})[0][0]
        probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert classes[int(np.argmax(logits))] == expected["prediction"]["class_name"], filename
        assert float(probabilities.max()) == pytest.approx(expected["prediction"]["confidence"], abs=1e-4)

    torchscript_bytes = client.get(f"/api/export/{project}/{exports['torchscript']}/download").content
    extra = {"modelyard.json": ""}
    scripted = torch.jit.load(io.BytesIO(torchscript_bytes), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["modelyard.json"])["classes"] == classes
    sample = sorted(best)[:5]
    batch = torch.from_numpy(np.concatenate([_preprocess_from_metadata(images_dir / f, props) for f in sample]))
    with torch.no_grad():
        predicted = scripted(batch).argmax(dim=1).tolist()
    assert [classes[p] for p in predicted] == [best[f]["prediction"]["class_name"] for f in sample]

    bundle = client.get(f"/api/export/{project}/{exports['onnx']}/download", params={"bundle": "zip"})
    folder = tmp_path / "bundle"
    zipfile.ZipFile(io.BytesIO(bundle.content)).extractall(folder)
    snippet = (folder / "README.txt").read_text(encoding="utf-8").split("Minimal usage:", 1)[1]
    probe = sample[0]
    (folder / "image.jpg").write_bytes((images_dir / probe).read_bytes())
    printed = subprocess.run([sys.executable, "-c", snippet], cwd=folder, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == best[probe]["prediction"]["class_name"]
