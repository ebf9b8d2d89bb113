"""A task core does not know, shipped as a third-party plugin, trains through the same engine and API.

tests/fixtures/modelyard_regression_task registers ``number_regression``
(predict the number a file name starts with), an architecture and an
importer that serve it, through the ``modelyard`` entry point. It is
"installed" for this process and for the job workers, and everything below
goes through the real server: listings, import, split, an experiment with the
task's defaults, and a run trained by a real worker process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient
from PIL import Image

from modelyard.api.app import create_app
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from tests.conftest import BASE_URL, assert_error
from tests.helpers.run_fixtures import kill_run_workers, wait_for

TASK = "number_regression"
TRAINING = "/api/training"


@pytest.fixture
def settings(workspace_dir: Path, import_root: Path) -> Iterator[Settings]:
    yield Settings(workspace=workspace_dir, import_roots=[import_root], scheduler_interval_s=0.3)
    kill_run_workers(workspace_dir)  # never leave a worker behind a failed test


@pytest.fixture
def task_client(regression_task_installed, settings: Settings) -> Iterator[TestClient]:  # type: ignore[no-untyped-def, type-arg]
    """A server whose plugin host found the regression task plugin through its entry point."""
    host = PluginHost().load_all()
    with TestClient(create_app(settings, build_services(settings, plugins=host)), base_url=BASE_URL) as client:
        yield client


def _numbered_images(folder: Path, count: int = 40) -> list[float]:
    """16 px images whose square's brightness grows with the number their name starts with."""
    folder.mkdir(parents=True)
    values = []
    for i in range(count):
        value = round((i % 10) + 0.5 * (i // 10 % 2), 1)
        grey = int(20 + 23 * value)
        image = Image.new("RGB", (16, 16), (0, 0, 0))
        image.paste((grey, grey, grey), (3 + i % 3, 3, 13, 13))
        image.save(folder / f"{value}_{i:03d}.png")
        values.append(value)
    return values


def test_the_task_and_what_serves_it_show_up_in_every_listing(task_client) -> None:  # type: ignore[no-untyped-def]
    plugins = {p["name"]: p for p in task_client.get("/api/system/plugins").json()["data"]}
    entry = plugins["number_regression"]
    assert entry["status"] == "loaded" and entry["source"] != "builtin"
    assert entry["registered"] == {"tasks": [TASK], "architectures": ["regression_tiny"],
                                   "importers": ["numbered_files"], "exporters": []}
    models = task_client.get(f"{TRAINING}/models", params={"task": TASK}).json()["data"]
    assert [m["name"] for m in models] == ["regression_tiny"]
    classifiers = task_client.get(f"{TRAINING}/models", params={"task": "classification"}).json()["data"]
    assert "regression_tiny" not in {m["name"] for m in classifiers}
    formats = task_client.get("/api/datasets/formats", params={"task": TASK}).json()["data"]
    assert [f["id"] for f in formats] == ["numbered_files"]
    openapi = task_client.get("/schema/openapi.json").json()
    assert TASK in openapi["components"]["schemas"]["ProjectCreate"]["properties"]["task"]["enum"]


def test_a_classifier_cannot_be_trained_for_the_task(task_client) -> None:  # type: ignore[no-untyped-def]
    project = task_client.post("/api/projects", json={"name": "numbers", "task": TASK}).json()["data"]
    response = task_client.post(f"{TRAINING}/{project['id']}/experiments",
                                json={"name": "wrong", "config": {"model": {"architecture": "simple_cnn"}}})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "config.model.architecture" and "regression_tiny" in error["message"]
    response = task_client.post(f"{TRAINING}/{project['id']}/experiments", json={
        "name": "wrong-monitor", "config": {"training": {"early_stopping": {"monitor": "val/acc"}}}})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "config.training.early_stopping.monitor" and "val/mae" in error["message"]


def test_a_project_of_the_task_imports_splits_and_trains_to_a_useful_model(task_client, import_root: Path) -> None:  # type: ignore[no-untyped-def]
    values = _numbered_images(import_root / "numbers")
    project_id = task_client.post("/api/projects", json={"name": "numbers", "task": TASK}).json()["data"]["id"]
    imported = task_client.post(f"/api/datasets/{project_id}/import/local",
                                json={"path": str(import_root / "numbers"), "format": "numbered_files"})
    assert imported.status_code == 200, imported.text
    assert imported.json()["data"]["imported"] == len(values)
    split = task_client.post(f"/api/splits/{project_id}",
                             json={"name": "main", "ratios": {"train": 0.7, "val": 0.3, "test": 0.0}, "seed": 1})
    assert split.status_code == 201, split.text

    config = {"data": {"batch_size": 8, "num_workers": 0},
              "training": {"max_epochs": 12, "optimizer": {"lr": 0.05}, "scheduler": {"name": "none"}},
              "hardware": {"devices": ["cpu"]}}
    response = task_client.post(f"{TRAINING}/{project_id}/experiments", json={"name": "regress", "config": config})
    assert response.status_code == 201, response.text
    experiment = response.json()["data"]
    assert experiment["config"]["model"]["architecture"] == "regression_tiny"  # the task's default
    assert experiment["config"]["training"]["early_stopping"]["monitor"] == "val/mae"
    assert experiment["config"]["data"]["image_size"] == [16, 16]  # the task's config default

    run_id = task_client.post(f"{TRAINING}/{project_id}/experiments/{experiment['id']}/run").json()["data"]["run_id"]

    def finished() -> dict | None:  # type: ignore[type-arg]
        run = task_client.get(f"{TRAINING}/{project_id}/runs/{run_id}").json()["data"]
        return run if run["status"] not in ("pending", "running") else None

    run = wait_for(finished, timeout=240, interval=0.5, what="the regression run to finish")
    assert run["status"] == "completed", run["error"]
    assert run["monitor"] == "val/mae" and run["checkpoints"]["best"] == "checkpoints/best.ckpt"
    metrics = task_client.get(f"{TRAINING}/{project_id}/runs/{run_id}/metrics").json()["data"]
    assert {"train/loss", "val/loss", "val/mae"} <= set(metrics[0]) and "val/acc" not in metrics[0]
    # useful: better than always answering the mean of the numbers (mean absolute deviation ~2.5)
    mean = sum(values) / len(values)
    baseline = sum(abs(v - mean) for v in values) / len(values)
    best = min(m["val/mae"] for m in metrics)
    assert run["best_metrics"]["val/mae"] == pytest.approx(best, abs=1e-6)
    assert best < 0.5 * baseline, (best, baseline)
