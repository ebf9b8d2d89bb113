"""``modelyard train CONFIG.yaml --project ID``: the real command, as a subprocess, in the foreground."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from click.testing import CliRunner

from modelyard import cli
from modelyard.core.jsonio import read_json
from modelyard.core.services import Services
from tests.helpers.datasets import create_project_with_dataset

MODELYARD = Path(sys.executable).parent / "modelyard"
CONFIG = {
    "model": {"architecture": "simple_cnn"},
    "data": {"image_size": [16, 16], "batch_size": 8, "num_workers": 0},
    "training": {"max_epochs": 2, "seed": 3},
    "hardware": {"devices": ["cpu"]},
}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELYARD), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_train_runs_the_engine_in_the_foreground_and_writes_the_run_files(services: Services, tmp_path: Path) -> None:
    project_id = create_project_with_dataset(services, per_class=5, size=16)
    config_file = tmp_path / "quick.yaml"
    config_file.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")

    result = run_cli("train", str(config_file), "--project", project_id, "--workspace", str(services.workspace.root),
                     cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    experiments = services.experiments.list(project_id)
    assert [e["name"] for e in experiments] == ["quick"] and experiments[0]["run_count"] == 1
    run_id = experiments[0]["latest_run"]["id"]
    assert f"run {run_id}: completed" in result.stdout
    run_dir = services.runs.run_dir(project_id, run_id)
    assert read_json(run_dir / "run.json")["status"] == "completed"
    assert [m["epoch"] for m in read_json(run_dir / "metrics.json")] == [1, 2]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1)) and events[-1]["event"] == "end"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["seed"] == 3
    for name in ("best.ckpt", "last.ckpt"):
        torch.load(run_dir / "checkpoints" / name, weights_only=True)
    assert "Epoch" in result.stdout  # the progress bar
    assert (run_dir / "train.log").stat().st_size > 0


def test_train_with_an_invalid_config_fails_naming_the_field_and_creates_nothing(services: Services,
                                                                                  tmp_path: Path) -> None:
    project_id = create_project_with_dataset(services, per_class=2, size=16)
    config_file = tmp_path / "broken.yaml"
    config_file.write_text(yaml.safe_dump({**CONFIG, "training": {"optimizer": {"lr": "fast"}}}), encoding="utf-8")

    result = CliRunner().invoke(
        cli.main, ["train", str(config_file), "--project", project_id, "--workspace", str(services.workspace.root)]
    )

    assert result.exit_code == 1, result.output
    assert "config.training.optimizer.lr" in result.output and "Traceback" not in result.output
    assert services.experiments.list(project_id) == []
