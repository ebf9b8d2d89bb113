"""``modelyard run PIPELINE.yaml``: the real command, twice, on a small generated dataset.

The first run creates everything, trains, evaluates and exports; the second
run of the same file reuses the project, dataset and split, trains a new run
and must reproduce the first run's metrics exactly (CPU, same seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import onnx
import pytest
import torch
import yaml

import modelyard
from modelyard.core.sample_data import generate_shapes
from modelyard.core.training.config import config_hash, parse_config

MODELYARD = Path(sys.executable).parent / "modelyard"
CLASSES = ["circle", "square", "star", "triangle"]
PIPELINE = {
    "project": {"name": "Pipeline shapes"},
    "dataset": {"path": "data/shapes", "format": "imagefolder"},
    "split": {"name": "50-25-25", "ratios": {"train": 0.5, "val": 0.25, "test": 0.25}, "seed": 3},
    "experiment": {
        "name": "tiny",
        "config": {
            "model": {"architecture": "simple_cnn"},
            "data": {"image_size": [16, 16], "batch_size": 8, "num_workers": 0},
            "training": {"max_epochs": 2, "seed": 11, "scheduler": {"name": "none"}},
            "hardware": {"devices": ["cpu"]},
        },
    },
    "evaluate": {"checkpoint": "best", "subsets": ["test"]},
    "exports": [{"format": "onnx", "options": {"opset_version": 17}}],
}
TIMING_KEYS = {"time_s", "images_per_s"}


@dataclass
class PipelineRuns:
    folder: Path
    workspace: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a tiny CNN; extra threads only slow a shared machine down
    return subprocess.run([str(MODELYARD), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> PipelineRuns:
    """The pipeline run twice in the same workspace: a human summary first, then ``--json``."""
    folder = tmp_path_factory.mktemp("pipeline")
    generate_shapes(folder / "data" / "shapes", per_class=8, size=16, seed=5)
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(PIPELINE), encoding="utf-8")
    workspace = folder / "workspace"
    first = run_cli("run", "pipeline.yaml", "--workspace", str(workspace), cwd=folder)
    second = run_cli("run", "pipeline.yaml", "--workspace", str(workspace), "--json", cwd=folder)
    return PipelineRuns(folder, workspace, first, second)


def result_path_of(summary: str) -> Path:
    line = next(line for line in summary.splitlines() if line.strip().startswith("result "))
    return Path(line.split(None, 1)[1].strip())


def first_result(runs: PipelineRuns) -> dict[str, Any]:
    return json.loads(result_path_of(runs.first.stdout).read_text(encoding="utf-8"))


def metrics_without_timings(run_dir: Path) -> list[dict[str, Any]]:
    records = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in records]


def test_the_first_run_succeeds_and_prints_the_summary_table(runs: PipelineRuns) -> None:
    assert runs.first.returncode == 0, runs.first.stdout[-3000:] + runs.first.stderr[-3000:]
    out = runs.first.stdout
    assert "Pipeline completed" in out
    assert "accuracy" in out and "macro F1" in out
    per_class_header = next(line for line in out.splitlines() if line.strip().startswith("CLASS"))
    assert per_class_header.split() == ["CLASS", "PRECISION", "RECALL", "F1", "SUPPORT"]
    for name in CLASSES:
        assert any(line.split()[:1] == [name] for line in out.splitlines()), name
    assert "onnx        verified" in out
    for label in ("run folder", "frozen config", "best checkpoint", "reproducibility", "result", "onnx model"):
        line = next(line for line in out.splitlines() if line.strip().startswith(label + " "))
        assert Path(line.strip()[len(label):].strip()).exists(), line
    assert out.rstrip().splitlines()[-1].strip().startswith("onnx model")  # ends with the verified file's path
    assert "Epoch" in out  # Lightning's progress bar
    for step in ("[1] project", "[2] dataset", "[3] split", "[4] experiment", "[5] training", "[6] evaluation",
                 "[7] export onnx"):
        assert step in runs.first.stderr


def test_pipeline_result_json_records_every_step(runs: PipelineRuns) -> None:
    result = first_result(runs)
    run_dir = Path(result["run"]["dir"])
    assert result_path_of(runs.first.stdout) == run_dir / "pipeline-result.json"
    assert result["status"] == "completed" and result["errors"] == []
    assert result["project"]["created"] is True and result["dataset"]["action"] == "imported"
    assert result["dataset"]["num_images"] == 32 and result["dataset"]["classes"] == CLASSES
    assert result["split"]["reused"] is False and result["split"]["stats"] == {"train": 16, "val": 8, "test": 8, "none": 0}
    assert result["run"]["status"] == "completed"
    assert Path(result["run"]["checkpoints"]["best"]).is_file()
    evaluation = result["evaluation"]
    assert evaluation["status"] == "completed" and evaluation["num_images"] == 8
    assert 0.0 <= evaluation["accuracy"] <= 1.0
    assert sorted(evaluation["per_class"]) == CLASSES
    assert sum(v["support"] for v in evaluation["per_class"].values()) == 8
    (export,) = result["exports"]
    assert export["status"] == "completed" and export["verification"]["passed"] is True
    assert export["verification"]["top1_agreement"] == 1.0
    onnx.checker.check_model(onnx.load(export["file"]))
    assert hashlib.sha256(Path(export["file"]).read_bytes()).hexdigest() == export["sha256"]
    document = result["pipeline"]["document"]
    assert document["split"] == {**PIPELINE["split"], "stratified": True}
    assert result["pipeline"]["sha256"] == hashlib.sha256((runs.folder / "pipeline.yaml").read_bytes()).hexdigest()


def test_the_run_folder_keeps_everything_that_makes_it_reproducible(runs: PipelineRuns) -> None:
    result = first_result(runs)
    run_dir = Path(result["run"]["dir"])
    record = json.loads((run_dir / "reproducibility.json").read_text(encoding="utf-8"))
    frozen = parse_config(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
    assert record["config_hash"] == config_hash(frozen)
    assert frozen.training.seed == record["seed"] == 11 and frozen.split_index == result["split"]["index"]
    assert record["devices"] == ["cpu"] and record["accelerator"] == "cpu"
    assert record["versions"]["torch"] == torch.__version__
    assert record["versions"]["lightning"] == lightning.__version__
    assert record["versions"]["modelyard"] == modelyard.__version__
    # the dataset fingerprint is a hash over the images' sha256 and their labels
    pairs = sorted((hashlib.sha256(p.read_bytes()).hexdigest(), p.parent.name)
                   for p in (runs.folder / "data" / "shapes").glob("*/*.png"))
    expected = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode("utf-8")).hexdigest()
    assert record["dataset_fingerprint"] == result["dataset"]["fingerprint"] == expected
    assert record["split_hash"] == result["split"]["assignment_hash"]
    assert result["run"]["reproducibility"] == record


def test_a_second_run_of_the_same_file_reuses_everything_and_reproduces_the_metrics(runs: PipelineRuns) -> None:
    assert runs.second.returncode == 0, runs.second.stdout[-3000:] + runs.second.stderr[-3000:]
    second = json.loads(runs.second.stdout)  # --json: the result document alone on stdout
    first = first_result(runs)
    assert Path(second["files"]["result"]) == Path(second["run"]["dir"]) / "pipeline-result.json"
    assert json.loads(Path(second["files"]["result"]).read_text(encoding="utf-8")) == second
    assert second["project"] == {**first["project"], "created": False}
    assert second["dataset"]["action"] == "skipped" and second["dataset"]["fingerprint"] == first["dataset"]["fingerprint"]
    assert second["split"]["reused"] is True and second["split"]["index"] == first["split"]["index"]
    assert second["split"]["assignment_hash"] == first["split"]["assignment_hash"]
    assert second["experiment"] == first["experiment"]
    assert second["run"]["id"] != first["run"]["id"]
    assert metrics_without_timings(Path(second["run"]["dir"])) == metrics_without_timings(Path(first["run"]["dir"]))
    best = [{k: v for k, v in r["run"]["best_metrics"].items() if k not in TIMING_KEYS} for r in (first, second)]
    assert best[0] == best[1] and best[0]["val/loss"] > 0
    for key in ("accuracy", "macro", "weighted", "per_class", "confusion_matrix"):
        assert second["evaluation"][key] == first["evaluation"][key], key
    assert second["exports"][0]["verification"]["passed"] is True
    projects = list((runs.workspace / "projects").iterdir())
    assert len(projects) == 1
    dataset = json.loads((projects[0] / "dataset" / "dataset.json").read_text(encoding="utf-8"))
    assert len(dataset["images"]) == 32 and dataset["split_names"] == ["50-25-25"]
