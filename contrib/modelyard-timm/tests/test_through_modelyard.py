"""modelyard-timm through modelyard itself: the REST API, its export workers, the engine's records, a pipeline file.

The session's trained run (``conftest.trained_run``: timm_resnet18 started from
a 1000-class weights file, trained by modelyard's engine) is copied into the
test's workspace; exports run in the server's own worker processes, which
find this plugin through its entry point, as on a deployed server.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

EXPORT_TIMEOUT_S = 180


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and "Traceback" not in response.text, body
    return body["error"]


def _copy_workspace(trained_run: Any, target: Path) -> Path:
    shutil.copytree(trained_run.workspace, target)
    return target


def _wait_for_export(client: Any, project: str, export_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    while time.monotonic() < deadline:
        data = client.get(f"/api/export/{project}/{export_id}").json()["data"]
        if data["status"] in ("completed", "failed"):
            return data
        time.sleep(0.3)
    raise AssertionError(f"export {export_id} did not finish in {EXPORT_TIMEOUT_S} s")


def assert_int8_verification(verification: dict[str, Any]) -> None:
    """Passed under the exporter's own lossy policy, made from a base ONNX file that passed its float32 one."""
    assert verification["passed"] is True, verification
    assert verification["policy"] == {"source": "exporter", "atol": 0.05, "rtol": 0.05, "min_top1_agreement": 0.95,
                                      "min_box_agreement": 1.0, "lossy": True}
    assert verification["top1_agreement"] >= 0.95 and verification["images"] > 20
    base = verification["base"]
    assert base["format"] == "onnx" and base["passed"] is True and base["policy"]["lossy"] is False


def test_the_run_started_from_a_1000_class_file_with_a_new_head(trained_run) -> None:
    """What the engine recorded: the file's backbone loaded, its 1000-class head skipped for a fresh 3-class one."""
    record = json.loads((trained_run.run_dir / "reproducibility.json").read_text(encoding="utf-8"))
    (weights,) = record["initial_weights"]
    assert weights["path"] == str(trained_run.weights_file)
    assert weights["skipped_keys"] == ["fc.bias", "fc.weight"] == weights["reinitialised_keys"]
    assert weights["head"] == ["fc"] and weights["loaded_keys"] == 120
    metrics = json.loads((trained_run.run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert max(epoch["val/acc"] for epoch in metrics) > 0.6  # it tells the stripes apart (chance: 1/3)


def test_onnx_int8_exports_through_the_api_and_passes_its_declared_verification(trained_run, client_for,
                                                                                 tmp_path: Path) -> None:
    workspace = _copy_workspace(trained_run, tmp_path / "workspace")
    project = trained_run.project_id
    with client_for(workspace) as client:
        formats = {f["id"]: f for f in client.get("/api/export/formats").json()["data"]}
        assert formats["onnx_int8"]["extension"] == ".int8.onnx" and formats["onnx_int8"]["base_format"] == "onnx"
        response = client.post(f"/api/export/{project}", json={
            "experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "format": "onnx_int8",
            "options": {"per_channel": True}})
        assert response.status_code == 201, response.text
        created = response.json()["data"]
        assert created["options"]["opset_version"] == 17 and created["options"]["per_channel"] is True
        done = _wait_for_export(client, project, created["id"])
        assert done["status"] == "completed", done["error"]
        assert done["verification_failed"] is False
        assert_int8_verification(done["verification"])
        print(f"\nint8 via the API: {json.dumps({k: done['verification'][k] for k in ('top1_agreement', 'max_abs_diff', 'images')})}; "
              f"base onnx: max_abs_diff {done['verification']['base']['max_abs_diff']}")
        name = f"timm_resnet18-{trained_run.run_id}.int8.onnx"
        assert done["file"]["name"] == name

        bundle = client.get(f"/api/export/{project}/{created['id']}/download", params={"bundle": "zip"})
        assert bundle.status_code == 200
        with zipfile.ZipFile(io.BytesIO(bundle.content)) as archive:
            assert name in archive.namelist()
            readme = archive.read("README.txt").decode("utf-8")
    assert f"ort.InferenceSession({name!r}" in readme and "int8 weights" in readme
    assert "lossy" in readme


def test_an_impossible_input_size_or_missing_weights_is_a_422_when_the_experiment_is_saved(client_for,
                                                                                           tmp_path: Path) -> None:
    with client_for(tmp_path / "workspace") as client:
        project = client.post("/api/projects", json={"name": "sizes"}).json()["data"]["id"]

        def save(model: dict[str, Any], size: list[int]) -> Any:
            return client.post(f"/api/training/{project}/experiments", json={"name": "x", "config": {
                "model": model, "data": {"image_size": size}, "hardware": {"devices": ["cpu"]}}})

        vit = _error(save({"architecture": "timm_vit_tiny_patch16_224"}, [100, 100]), 422)
        assert vit["details"]["field"] == "config.data.image_size" and "multiples of 16" in vit["message"]
        convnet = _error(save({"architecture": "timm_convnext_atto"}, [8, 8]), 422)
        assert convnet["details"]["field"] == "config.data.image_size" and "at least 32x32" in convnet["message"]
        pretrained = _error(save({"architecture": "timm_resnet18", "pretrained": True}, [64, 64]), 422)
        assert pretrained["details"]["field"] == "config.model.pretrained"
        assert "huggingface-cli download timm/resnet18" in pretrained["message"]
        assert save({"architecture": "timm_vit_tiny_patch16_224"}, [96, 64]).status_code == 201


PIPELINE: dict[str, Any] = {
    "project": {"name": "timm pipeline"},
    "dataset": {"path": "data/stripes", "format": "imagefolder"},
    "split": {"name": "60-40", "ratios": {"train": 0.6, "val": 0.4}, "seed": 1},
    "experiment": {
        "name": "convnext-atto",
        "config": {
            "model": {"architecture": "timm_convnext_atto"},
            "data": {"image_size": [32, 32], "batch_size": 16, "num_workers": 0},
            "training": {"max_epochs": 4, "seed": 5, "scheduler": {"name": "none"},
                         "optimizer": {"name": "adamw", "lr": 0.002}},
            "hardware": {"devices": ["cpu"]},
        },
    },
    "evaluate": None,
    "exports": [{"format": "onnx_int8"}],
}


def test_onnx_int8_in_a_pipeline_file_exports_and_passes_its_verification(tmp_path: Path, stripes) -> None:
    """``modelyard run pipeline.yaml``, the real command: import, split, train a timm model, export int8."""
    stripes(tmp_path / "data" / "stripes", per_class=30, seed=8)
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(PIPELINE), encoding="utf-8")
    command = [str(Path(sys.executable).parent / "modelyard"), "run", "pipeline.yaml",
               "--workspace", str(tmp_path / "workspace"), "--json"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "completed" and result["errors"] == []
    (export,) = result["exports"]
    assert export["format"] == "onnx_int8" and export["status"] == "completed"
    assert export["file"].endswith(".int8.onnx") and Path(export["file"]).is_file()
    assert_int8_verification(export["verification"])
    print(f"\nint8 in a pipeline: {json.dumps({k: export['verification'][k] for k in ('top1_agreement', 'max_abs_diff', 'images')})}")


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Export workers inherit it: tiny models on a shared CI machine gain nothing from more threads."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
