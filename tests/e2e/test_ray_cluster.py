"""Jobs on a real Ray cluster (issue 18): the ``ray`` executor driven through the API.

One head node, started by this module on this machine (2 CPUs, token auth
on, its own temp folder and ports) and always stopped by the fixture that
started it; every test talks to it only as a server would: through the REST
API of an app built by ``create_app`` with ``executor="ray"``. One run
trains with DDP across 2 Ray Train workers (CPU, gloo), loses a worker,
resumes, completes, is evaluated and exported; another, a plain config run as
one Ray Job, outlives its server, is stopped and resumed. All tests share the cluster,
so they run in one xdist group (``make test`` uses ``--dist loadgroup``).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray.job_submission", reason="the ray executor needs `pip install 'modelyard[ray]'`")

from litestar.testing import TestClient  # noqa: E402

from modelyard.api.app import create_app  # noqa: E402
from modelyard.core.jobs.cluster_job import read_cluster_job  # noqa: E402
from modelyard.core.services import build_services  # noqa: E402
from modelyard.core.settings import Settings  # noqa: E402
from modelyard.core.training.checkpoints import usable_checkpoint  # noqa: E402
from modelyard.core.training.run_folder import EventLog  # noqa: E402
from tests.conftest import BASE_URL, TINY_TRAINING_CONFIG  # noqa: E402
from tests.helpers.ray_cluster import LocalRayCluster, start_cluster, stop_cluster  # noqa: E402
from tests.helpers.run_fixtures import run_over_api, start_run_over_api, wait_for  # noqa: E402

pytestmark = [pytest.mark.xdist_group("ray_cluster"), pytest.mark.slow, pytest.mark.timeout(600)]

TWO_WORKERS = {"executor": "ray", "num_workers": 2, "cpus_per_worker": 1}
LONG = {"max_epochs": 1000, "scheduler": {"name": "none"}, "early_stopping": None}  # stopped or killed by the test
LONG_RAY_RUN = {**TINY_TRAINING_CONFIG, "hardware": TWO_WORKERS, "training": LONG}
#: a run whose config knows nothing of Ray: on a ray server it is one Ray Job, the local worker's command
LONG_RUN = {**TINY_TRAINING_CONFIG, "training": LONG}
ENDED = {"completed", "failed", "stopped", "interrupted"}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalRayCluster]:
    cluster = start_cluster(num_cpus=2)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(autouse=True)
def no_job_left_on_the_cluster(ray_cluster: LocalRayCluster) -> Iterator[None]:
    """Whatever a test leaves running on the shared cluster (it failed half-way) is stopped before the next one."""
    yield
    from ray.job_submission import JobSubmissionClient

    token = ray_cluster.token_file.read_text().strip()
    jobs = JobSubmissionClient(ray_cluster.address, headers={"Authorization": f"Bearer {token}"})
    for job in jobs.list_jobs():
        if not job.status.is_terminal() and job.submission_id:
            jobs.stop_job(job.submission_id)
            wait_for(lambda job=job: jobs.get_job_status(job.submission_id).is_terminal(), timeout=30,
                     what=f"Ray job {job.submission_id} to stop")


@pytest.fixture
def settings(workspace_dir: Path, import_root: Path, ray_cluster: LocalRayCluster) -> Settings:
    return Settings(workspace=workspace_dir, import_roots=[import_root], scheduler_interval_s=0.3,
                    executor="ray", ray_address=ray_cluster.address, ray_token_file=ray_cluster.token_file)


def _wait_status(client: Any, project_id: str, run_id: str, statuses: set[str], timeout: float = 240) -> dict[str, Any]:
    return wait_for(lambda: (run := run_over_api(client, project_id, run_id))["status"] in statuses and run,
                    timeout=timeout, interval=0.3, what=f"status in {statuses}")


def _after_first_epoch(client: Any, project_id: str, run_id: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        run = run_over_api(client, project_id, run_id)
        assert run["status"] in ("pending", "running"), run
        return run if run["checkpoints"]["last"] else None

    return wait_for(ready, timeout=240, interval=0.3, what="the first epoch's checkpoint")


def _resume_and_finish(client: Any, services: Any, project_id: str, run_id: str) -> None:
    """Resume with one more epoch than the checkpoint holds; it continues from there on the cluster and completes."""
    run_dir = services.runs.run_dir(project_id, run_id)
    done = usable_checkpoint(run_dir / "checkpoints")
    assert done is not None and done.epochs_done >= 1
    mark = EventLog(services.workspace, run_dir).last_id()
    response = client.post(f"/api/training/{project_id}/runs/{run_id}/resume", json={"max_epochs": done.epochs_done + 1})
    assert response.status_code == 200, response.text
    run = _wait_status(client, project_id, run_id, ENDED)
    assert run["status"] == "completed", run["error"]
    epochs = [e["data"]["epoch"] for e in EventLog(services.workspace, run_dir).read(after_id=mark) if e["event"] == "epoch"]
    assert epochs == [done.epochs_done + 1]  # continued from the checkpoint, not from epoch 1
    assert read_cluster_job(run_dir) is not None


def test_a_run_on_two_ray_workers_survives_a_killed_worker_and_trains_evaluates_and_exports_like_a_local_run(
        client, services, trained_run_template) -> None:
    project_id, run_id = start_run_over_api(client, services, LONG_RAY_RUN, "on-ray")
    run = _after_first_epoch(client, project_id, run_id)
    run_dir = services.runs.run_dir(project_id, run_id)
    cluster_job = read_cluster_job(run_dir)
    assert cluster_job is not None and cluster_job.executor == "ray"
    facts = json.loads((run_dir / "reproducibility.json").read_text())
    assert facts["world_size"] == 2 and facts["devices"] == ["ray-worker:0", "ray-worker:1"]

    os.kill(run["worker_pid"], signal.SIGKILL)  # world rank 0, a Ray Train worker process (the cluster is this machine)
    run = _wait_status(client, project_id, run_id, ENDED, timeout=120)
    assert run["status"] == "interrupted" and run["error"]["type"] == "WorkerLost", run["error"]
    _resume_and_finish(client, services, project_id, run_id)

    # the same files, and metrics of the same shape, as the same config trained by a local worker
    local_metrics = json.loads((trained_run_template[1].run_dir / "metrics.json").read_text())
    metrics = client.get(f"/api/training/{project_id}/runs/{run_id}/metrics").json()["data"]
    assert {tuple(sorted(m)) for m in metrics} == {tuple(sorted(m)) for m in local_metrics}
    assert [m["epoch"] for m in metrics] == list(range(1, len(metrics) + 1)) and len(metrics) >= 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    events = EventLog(services.workspace, run_dir).read()
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "completed"

    body = {"experiment_id": run["experiment_id"], "run_id": run_id}
    evaluation = client.post(f"/api/evaluation/{project_id}", json=body)
    assert evaluation.status_code == 201, evaluation.text
    export = client.post(f"/api/export/{project_id}", json={**body, "format": "onnx"})
    assert export.status_code == 201, export.text
    for path in (f"/api/evaluation/{project_id}/{evaluation.json()['data']['id']}",
                 f"/api/export/{project_id}/{export.json()['data']['id']}"):
        job = wait_for(lambda path=path: (data := client.get(path).json()["data"])["status"] in ENDED and data,
                       timeout=180, interval=0.3, what=path)
        assert job["status"] == "completed", job["error"]
    evaluation_dir = services.workspace.project_dir(project_id) / "evaluations" / evaluation.json()["data"]["id"]
    assert read_cluster_job(evaluation_dir) is not None


def test_a_restarted_server_reattaches_to_its_cluster_run_which_stops_and_resumes(settings, services) -> None:
    with TestClient(app=create_app(settings), base_url=BASE_URL) as client:
        project_id, run_id = start_run_over_api(client, services, LONG_RUN, "on-ray")
        _after_first_epoch(client, project_id, run_id)
    # the first server is gone; its run goes on on the cluster, and the next server re-attaches to it
    restarted = build_services(settings, prepare=False)
    report = restarted.queue.start()
    try:
        assert run_id in report.adopted
    finally:
        restarted.queue.shutdown()
    with TestClient(app=create_app(settings), base_url=BASE_URL) as client:
        assert run_over_api(client, project_id, run_id)["status"] == "running"
        response = client.post(f"/api/training/{project_id}/runs/{run_id}/stop")
        assert response.status_code == 200 and response.json()["data"]["stop_requested"] is True
        run = _wait_status(client, project_id, run_id, ENDED, timeout=120)
        assert run["status"] == "stopped" and run["killed"] is False and run["error"] is None
        _resume_and_finish(client, services, project_id, run_id)

