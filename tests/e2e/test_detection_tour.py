"""Object detection end to end over real HTTP: a served workspace, a ZIP of generated COCO data, the small
detector trained by a real worker, evaluated through Lightning, exported to ONNX, verified and run in onnxruntime.
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
from PIL import Image

from modelyard.core.sample_data import generate_shapes_detection
from tests.e2e.test_serve import _clean_env, start_server, stop_server

CONFIG = {"data": {"image_size": [64, 64], "batch_size": 8, "num_workers": 0},
          "training": {"max_epochs": 3, "optimizer": {"lr": 0.004}}, "hardware": {"devices": ["cpu"]}}


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def _finished(http: httpx.Client, url: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = _data(http.get(url))
        if record["status"] not in ("pending", "running"):
            return record
        time.sleep(0.5)
    raise AssertionError(f"{url} did not finish within {timeout} s")


def test_a_detection_project_imports_trains_evaluates_and_exports_a_verified_onnx_model(tmp_path: Path) -> None:
    summary = generate_shapes_detection(tmp_path / "shapes", num_images=96, size=64, seed=3)
    server = start_server(tmp_path, ["--workspace", str(tmp_path / "workspace")], _clean_env())
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            project = _data(http.post("/api/projects", json={"name": "boxes", "task": "object_detection"}), 201)
            pid = project["id"]
            imported = _data(http.post(f"/api/datasets/{pid}/import/upload",
                                       files={"file": ("shapes.zip", _zip_folder(tmp_path / "shapes"), "application/zip")}))
            assert imported["imported"] == summary["num_images"] and imported["format"] == "coco"
            info = _data(http.get(f"/api/datasets/{pid}"))
            assert info["task"] == "object_detection" and info["num_boxes"] == summary["num_boxes"]
            _data(http.post(f"/api/splits/{pid}", json={"name": "main", "ratios": {"train": 0.7, "val": 0.15, "test": 0.15},
                                                       "seed": 1}), 201)

            experiment = _data(http.post(f"/api/training/{pid}/experiments", json={"name": "small", "config": CONFIG}), 201)
            assert experiment["config"]["model"]["architecture"] == "simple_detector"
            run_id = _data(http.post(f"/api/training/{pid}/experiments/{experiment['id']}/run"), 201)["run_id"]
            run = _finished(http, f"/api/training/{pid}/runs/{run_id}")
            assert run["status"] == "completed", run["error"]
            assert run["monitor"] == "val/map_50" and {"val/map", "val/map_50", "val/loss"} <= set(run["best_metrics"])

            created = _data(http.post(f"/api/evaluation/{pid}", json={"experiment_id": experiment["id"], "run_id": run_id,
                                                                     "split_subset": ["val", "test"],
                                                                     "score_threshold": 0.3}), 201)
            evaluation = _finished(http, f"/api/evaluation/{pid}/{created['id']}")
            assert evaluation["status"] == "completed", evaluation["error"]
            metrics = evaluation["metrics"]
            assert {"map", "map_50", "map_75", "per_class_ap", "precision", "recall"} <= set(metrics)
            assert "accuracy" not in metrics and metrics["score_threshold"] == 0.3
            assert metrics["confusion_matrix"]["labels"][-1] == "background"
            page = _data(http.get(f"/api/evaluation/{pid}/{created['id']}/results", params={"sort_by": "error"}))
            assert page["total"] == evaluation["num_images"]
            errors = [row["fp"] + row["fn"] for row in page["items"]]
            assert errors == sorted(errors, reverse=True)
            assert all({"ground_truth", "predictions", "matches"} <= set(row) for row in page["items"])

            export = _data(http.post(f"/api/export/{pid}", json={"experiment_id": experiment["id"], "run_id": run_id,
                                                                 "format": "onnx"}), 201)
            export = _finished(http, f"/api/export/{pid}/{export['id']}")
            assert export["status"] == "completed", export["error"]
            assert export["verification"]["passed"] is True
            model = http.get(f"/api/export/{pid}/{export['id']}/download")
            assert model.status_code == 200
    finally:
        stop_server(server)

    session = onnxruntime.InferenceSession(model.content, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["modelyard.task"] == "object_detection" and "modelyard.score_threshold" in meta
    image = Image.open(next((tmp_path / "shapes").glob("*.png"))).convert("RGB").resize((64, 64))
    pixels = (np.asarray(image, dtype=np.float32) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    boxes, scores, labels = session.run(None, {"input": pixels.transpose(2, 0, 1)[None].astype(np.float32)})
    assert boxes.shape[1:] == (4,) and scores.shape == labels.shape == (boxes.shape[0],)
