"""The CLI and a server on the same workspace: every job runs once, in the server's queue.

A real ``modelyard serve`` holds the workspace; ``modelyard run`` and
``modelyard train`` (real subprocesses) then hand their runs, evaluation and
export to that server and follow them. Each run must have had exactly one
executor (one ``running`` status, one ``end`` event, claimed by the server,
trained by a worker that is not the CLI), and what the CLI prints must be
what is on disk.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from modelyard.core.jsonio import read_json
from modelyard.core.sample_data import generate_shapes
from tests.e2e.test_serve import _clean_env, start_server, stop_server

MODELYARD = Path(sys.executable).parent / "modelyard"
PIPELINE = {
    "project": {"name": "Shared shapes"},
    "dataset": {"path": "data/shapes", "format": "imagefolder"},
    "split": {"name": "60-20-20", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},
    "experiment": {
        "name": "tiny",
        "config": {
            "model": {"architecture": "simple_cnn"},
            "data": {"image_size": [16, 16], "batch_size": 8, "num_workers": 0},
            "training": {"max_epochs": 2, "seed": 5, "scheduler": {"name": "none"}},
            "hardware": {"devices": ["cpu"]},
        },
    },
    "evaluate": {"checkpoint": "best", "subsets": ["test"]},
    "exports": [{"format": "onnx", "options": {"opset_version": 17}}],
}


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELYARD), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**env, "OMP_NUM_THREADS": "1"})


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()]


def _assert_one_executor(run_dir: Path) -> dict:
    run = read_json(run_dir / "run.json")
    events = _events(run_dir)
    assert [e["event"] for e in events].count("end") == 1, [e["event"] for e in events]
    running = [e for e in events if e["event"] == "status" and e["data"]["status"] == "running"]
    assert len(running) == 1, running
    assert run["status"] == "completed" and run["claimed_by"]["by"] == "server"
    assert run["worker_pid"] != run["claimed_by"]["pid"]  # a worker process of the server trained it
    return run


def test_cli_jobs_go_to_the_serving_servers_queue_and_run_once(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    generate_shapes(tmp_path / "data" / "shapes", per_class=12, size=24, seed=0, shapes=("circle", "square", "triangle"))
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(PIPELINE), encoding="utf-8")
    env = _clean_env()
    server = start_server(tmp_path, ["--workspace", str(workspace)], env)
    try:
        piped = _cli("run", "pipeline.yaml", "--workspace", str(workspace), "--json", cwd=tmp_path, env=env)
        assert piped.returncode == 0, piped.stdout[-3000:] + piped.stderr[-3000:]
        result = json.loads(piped.stdout)
        run_dir = Path(result["run"]["dir"])
        run = _assert_one_executor(run_dir)
        assert result["run"]["best_epoch"] == run["best_epoch"]
        assert result["run"]["best_metrics"] == run["best_metrics"]
        evaluation = read_json(Path(result["evaluation"]["dir"]) / "evaluation.json")
        assert evaluation["claimed_by"]["by"] == "server" and evaluation["status"] == "completed"
        assert result["evaluation"]["accuracy"] == evaluation["metrics"]["accuracy"]
        export = read_json(Path(result["exports"][0]["dir"]) / "export.json")
        assert export["claimed_by"]["by"] == "server" and export["verification"]["passed"] is True

        config = tmp_path / "tiny.yaml"
        config.write_text(yaml.safe_dump({**PIPELINE["experiment"]["config"], "split_index": 0}), encoding="utf-8")
        trained = _cli("train", str(config), "--project", result["project"]["id"], "--workspace", str(workspace),
                       cwd=tmp_path, env=env)
        assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
        assert "serves this workspace" in trained.stderr
        run_id = re.search(r"^run (run-[a-z0-9]{8}): completed$", trained.stdout, re.M).group(1)
        run_dir = next(workspace.glob(f"projects/*/experiments/*/runs/{run_id}"))
        run = _assert_one_executor(run_dir)
        assert f"best epoch {run['best_epoch']} by {run['monitor']}" in trained.stdout
        val_loss = re.search(r"val/loss=([0-9.]+)", trained.stdout).group(1)
        assert float(val_loss) == round(run["best_metrics"]["val/loss"], 4)
    finally:
        stop_server(server)
