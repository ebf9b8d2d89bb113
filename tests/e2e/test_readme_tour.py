"""The README's curl tour, copy-pasted: its commands, parsed from README.md, run in order against a real server.

The first block makes the data and starts the server (``make serve
IMPORT_ROOT=./data``; the test starts the same ``modelyard serve`` on a free
port); the second block runs in bash exactly as written (only the port in
``API=`` differs). Then every step's result is checked through the API, the
tour's model must reach 0.90 test accuracy, and the downloaded ``model.onnx``
must be the verified ONNX file, not an error envelope.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import onnx
import yaml

from tests.e2e.test_serve import _clean_env, start_server, stop_server

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
MODELYARD = Path(sys.executable).parent / "modelyard"


def tour_blocks() -> list[str]:
    """The ```bash blocks of the README's curl tour section, in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## A 5-minute tour with curl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def test_the_tour_has_a_setup_block_and_a_curl_block() -> None:
    setup, tour = tour_blocks()
    assert "make serve IMPORT_ROOT=./data" in setup
    assert "--import-root $(IMPORT_ROOT)" in (ROOT / "Makefile").read_text(encoding="utf-8")  # what that line means
    assert tour.startswith("API=http://127.0.0.1:8000/api\n")
    assert tour.count("?wait=600") == 3  # every job is waited for before its result is used


def test_the_tours_experiment_config_is_literally_configs_cpu_quick_yaml() -> None:
    tour = tour_blocks()[1]
    body = re.search(r"experiments -H 'content-type: application/json' -d '(\{.*?\})' \| jq", tour, re.S).group(1)
    assert json.loads(body)["config"] == yaml.safe_load((ROOT / "configs" / "cpu-quick.yaml").read_text(encoding="utf-8"))


def test_the_curl_tour_runs_as_written_and_trains_a_good_model(tmp_path: Path) -> None:
    assert shutil.which("curl") and shutil.which("jq"), "the tour needs curl and jq (.ci/run installs jq)"
    setup, tour = tour_blocks()
    for line in setup.splitlines():
        command = line.split("#", 1)[0].strip()
        if command.startswith(".venv/bin/modelyard sample-data"):
            subprocess.run([str(MODELYARD), *command.split()[1:]], cwd=tmp_path, check=True, timeout=300,
                           capture_output=True)
    assert (tmp_path / "data" / "shapes").is_dir()
    env = _clean_env()
    server = start_server(tmp_path, ["--import-root", "./data", "--workspace", "./workspace"], env)
    try:
        script = tour.replace("API=http://127.0.0.1:8000/api", f"API={server.url}/api", 1)
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert '"status":"error"' not in result.stdout.replace(" ", ""), result.stdout[-3000:]
        _check_every_step(server.url + "/api", tmp_path)
    finally:
        stop_server(server)


def _check_every_step(api: str, folder: Path) -> None:
    with httpx.Client(base_url=api, timeout=60) as client:
        def data(path: str) -> dict:
            response = client.get(path)
            assert response.status_code == 200, response.text
            return response.json()["data"]

        (project,) = data("/projects")
        pid = project["id"]
        assert project["name"] == "Shapes"
        assert data(f"/datasets/{pid}")["image_stats"]["num_images"] == 800  # 1. and 2.
        (split,) = data(f"/splits/{pid}")  # 3.
        assert split["name"] == "70-15-15"
        (experiment,) = data(f"/training/{pid}/experiments")
        (run,) = data(f"/training/{pid}/experiments/{experiment['id']}/runs")  # 4.
        assert run["status"] == "completed", run.get("error")
        (evaluation,) = data(f"/evaluation/{pid}")  # 5.
        evaluation = data(f"/evaluation/{pid}/{evaluation['id']}")
        assert evaluation["status"] == "completed" and evaluation["metrics"]["accuracy"] >= 0.90, evaluation["metrics"]
        (export,) = data(f"/export/{pid}")  # 6.
        export = data(f"/export/{pid}/{export['id']}")
        assert export["status"] == "completed" and export["verification"]["passed"] is True
    model = (folder / "model.onnx").read_bytes()
    assert hashlib.sha256(model).hexdigest() == export["file"]["sha256"]
    onnx.checker.check_model(onnx.load_from_string(model))
