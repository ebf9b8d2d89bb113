"""How fast jobs start and finish through the real server (issue 12, item 8).

A real ``modelyard serve`` (a subprocess, over HTTP) on a generated dataset
of 5,000 32 px images split 80/10/10; one resnet18 32 px run trained for one
epoch; then evaluations of the 500 test images and ONNX exports (verified on
real images), each timed from the ``POST`` to ``running`` (the start latency)
and to ``completed`` (the wall time). ``running`` is polled every 10 ms; then
the client waits for the end with one ``GET ...?wait=60`` (DESIGN section
11), as a client should: polling at 100 Hz all along would put the server's
request handling on the same two cores as the job it times. The same jobs
run against a server with warm workers (one pre-started worker that has
imported torch) and against one without (every worker a fresh ``python
-m``): ``against / ours``. Before each warm measurement the benchmark waits
until the replacement warm worker says it is ready in
``.logs/warm-workers.log`` (steady state for interactive use).

Run ``python -m benchmarks --only job_start_latency eval_500_wall export_resnet18_32_wall``.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

MODELYARD = Path(sys.executable).parent / "modelyard"
POLL_S = 0.01


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``modelyard serve`` on a free port, with or without warm workers."""

    def __init__(self, workspace: Path, import_root: Path, warm_workers: int, threads: int | None) -> None:
        self.workspace = workspace
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.log = workspace.parent / f"serve-{port}.log"
        workspace.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w", encoding="utf-8") as sink:
            self.process = subprocess.Popen(
                [str(MODELYARD), "serve", "--port", str(port), "--workspace", str(workspace), "--import-root",
                 str(import_root), "--warm-workers", str(warm_workers), "--log-level", "warning"],
                env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.client.get("/api/system/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()["data"]

    def warm_ready_count(self) -> int:
        path = self.workspace / ".logs" / "warm-workers.log"
        return path.read_text(encoding="utf-8").count(" ready in ") if path.exists() else 0

    def close(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _wait(server: Server, path: str, until: set[str], timeout: float = 900) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    while True:
        record = server.call("GET", path)
        if record["status"] in until:
            return record, time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"{path} still {record['status']} after {timeout} s")
        time.sleep(POLL_S)


def prepare_project(server: Server, data_dir: Path, epochs: int) -> dict[str, str]:
    """Project, import, 80/10/10 split, one trained resnet18 32 px run: the ids the jobs need."""
    project = server.call("POST", "/api/projects", json={"name": "jobs bench", "task": "classification"})["id"]
    server.call("POST", f"/api/datasets/{project}/import/local", json={"path": str(data_dir), "format": "imagefolder"})
    server.call("POST", f"/api/splits/{project}", json={"name": "80-10-10", "ratios": {"train": 0.8, "val": 0.1,
                                                                                         "test": 0.1}, "seed": 0})
    config = {"model": {"architecture": "resnet18", "pretrained": False},
              "data": {"image_size": [32, 32], "batch_size": 64, "augmentations": {"train": [], "val": []}},
              "training": {"max_epochs": epochs, "scheduler": {"name": "none"}, "early_stopping": None}}
    experiment = server.call("POST", f"/api/training/{project}/experiments", json={"name": "r18", "config": config})["id"]
    run = server.call("POST", f"/api/training/{project}/experiments/{experiment}/run")["run_id"]
    record, _ = _wait(server, f"/api/training/{project}/runs/{run}", {"completed", "failed", "stopped", "interrupted"})
    if record["status"] != "completed":
        raise RuntimeError(f"the benchmark run {run} ended {record['status']}: {record.get('error')}")
    return {"project": project, "experiment": experiment, "run": run}


def time_job(server: Server, ids: dict[str, str], kind: str) -> dict[str, float]:
    """One evaluation (test subset) or ONNX export: seconds from the POST to ``running`` and to ``completed``."""
    project = ids["project"]
    body = {"experiment_id": ids["experiment"], "run_id": ids["run"], "checkpoint": "best"}
    if kind == "evaluation":
        body |= {"split_subset": "test", "batch_size": 100}
        path = f"/api/evaluation/{project}"
    else:
        body |= {"format": "onnx", "options": {"opset_version": 17}}
        path = f"/api/export/{project}"
    start = time.perf_counter()
    job_id = server.call("POST", path, json=body)["id"]
    record = server.call("GET", f"{path}/{job_id}")
    while record["status"] == "pending":
        time.sleep(POLL_S)
        record = server.call("GET", f"{path}/{job_id}")
    running_s = time.perf_counter() - start
    while record["status"] not in ("completed", "failed"):  # one long-poll, as a client waits for a job
        record = server.call("GET", f"{path}/{job_id}", params={"wait": 60})
    now = time.perf_counter() - start
    if record["status"] != "completed":
        raise RuntimeError(f"{kind} {job_id} failed: {record.get('error')}")
    if kind == "evaluation" and record["num_images"] != 500:
        raise RuntimeError(f"expected 500 test images, evaluated {record['num_images']}")
    return {"start_s": running_s, "wall_s": now}


def _wait_warm(server: Server, used: int, timeout: float = 120) -> None:
    """Until more warm workers have said they are ready than jobs have used."""
    deadline = time.monotonic() + timeout
    while server.warm_ready_count() <= used:
        if time.monotonic() > deadline:
            raise RuntimeError("no warm worker became ready")
        time.sleep(0.1)


def bench_jobs(workdir: Path, images: int = 5000, repeats: int = 3, epochs: int = 1,
               threads: int | None = None) -> dict[str, Any]:
    """Evaluation and export latencies with warm workers and with cold starts, on the same trained run."""
    from modelyard.core.sample_data import generate_shapes

    data = workdir / "data"
    generate_shapes(data, per_class=images // 4, size=32, seed=0, shapes=("circle", "square", "star", "triangle"))
    workspace = workdir / "workspace"
    measured: dict[str, dict[str, list[float]]] = {}
    for mode, warm in (("warm", 1), ("cold", 0)):
        server = Server(workspace, workdir, warm, threads)
        try:
            ids = prepare_project(server, data, epochs) if mode == "warm" else ids
            values: dict[str, list[float]] = {"eval_start": [], "eval_wall": [], "export_start": [], "export_wall": []}
            used = 1 if warm else 0  # warm workers consumed so far (the training run took the first one)
            for _ in range(repeats):
                for kind, key in (("evaluation", "eval"), ("export", "export")):
                    if warm:
                        _wait_warm(server, used)
                        used += 1
                    timing = time_job(server, ids, kind)
                    values[f"{key}_start"].append(timing["start_s"])
                    values[f"{key}_wall"].append(timing["wall_s"])
            measured[mode] = values
        finally:
            server.close()
    return {"images": images, "test_images": 500, "repeats": repeats, "threads": threads, **measured,
            "medians": {mode: {k: statistics.median(v) for k, v in vals.items()} for mode, vals in measured.items()}}
