"""Choosing an executor, and what is refused before any job runs (issue 18).

The cluster itself is exercised in tests/e2e/test_ray_cluster.py; here only
what needs no cluster: the refusals at start (no Ray installed, no address, a
cluster that does not answer), the 409 of a Ray-trained run on a local
server, the config checks of ``hardware.executor``, and the job's entrypoint
on the cluster.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from modelyard.core.errors import ExecutorUnavailableError, ValidationError
from modelyard.core.jobs.cluster_job import read_cluster_job, runs_on_cluster, write_cluster_job
from modelyard.core.jobs.kinds import TRAIN
from modelyard.core.jobs.local_executor import LocalExecutor
from modelyard.core.jobs.queue import JobQueue
from modelyard.core.jobs.ray_executor import dashboard_url, entrypoint
from modelyard.core.settings import Settings
from modelyard.core.training.config import parse_config
from modelyard.core.workspace import Workspace
from tests.conftest import TINY_TRAINING_CONFIG, assert_error
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.ray_cluster import free_port


def test_the_local_executor_is_the_default(tmp_path: Path) -> None:
    queue = JobQueue(Workspace(tmp_path), Settings(workspace=tmp_path))
    assert isinstance(queue.executor, LocalExecutor) and queue.executor is queue.local
    assert queue.executor.reserves_devices


def test_the_ray_executor_is_refused_at_start_without_ray_naming_the_extra(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name == "ray" or name.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra sees: import ray fails
    settings = Settings(workspace=tmp_path, executor="ray", ray_address="http://127.0.0.1:8265")
    with pytest.raises(ExecutorUnavailableError, match=r"pip install 'modelyard\[ray\]'"):
        JobQueue(Workspace(tmp_path), settings)


def test_the_ray_executor_needs_an_address_and_a_cluster_that_answers(tmp_path: Path) -> None:
    pytest.importorskip("ray.job_submission")
    with pytest.raises(ExecutorUnavailableError, match="--ray-address"):
        JobQueue(Workspace(tmp_path), Settings(workspace=tmp_path, executor="ray"))
    nobody = f"127.0.0.1:{free_port()}"
    queue = JobQueue(Workspace(tmp_path), Settings(workspace=tmp_path, executor="ray", ray_address=nobody))
    assert not queue.executor.reserves_devices
    with pytest.raises(ExecutorUnavailableError, match="cannot reach the Ray cluster"):
        queue.start()


def test_an_unknown_executor_or_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExecutorUnavailableError, match="unknown executor 'slurm'"):
        JobQueue(Workspace(tmp_path), Settings(workspace=tmp_path, executor="slurm"))
    pytest.importorskip("ray.job_submission")
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ExecutorUnavailableError, match="is empty"):
        JobQueue(Workspace(tmp_path), Settings(workspace=tmp_path, executor="ray", ray_address="h:1", ray_token_file=empty))


def test_a_local_server_refuses_a_run_that_must_train_on_a_ray_cluster(client, services) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    config = {**TINY_TRAINING_CONFIG, "hardware": {"executor": "ray", "num_workers": 2}}
    experiment = services.experiments.create(project_id, "ray", config=config)  # a valid config: it may be saved
    error = assert_error(client.post(f"/api/training/{project_id}/experiments/{experiment['id']}/run"), 409, "CONFLICT")
    assert "--executor ray" in error["message"]


@pytest.mark.parametrize(("hardware", "field"), [
    ({"num_workers": 2}, "config.hardware.num_workers"),
    ({"gpus_per_worker": 1}, "config.hardware.gpus_per_worker"),
    ({"executor": "ray", "num_processes": 2}, "config.hardware.num_processes"),
    ({"executor": "ray", "strategy": "ddp"}, "config.hardware.strategy"),
])
def test_ray_hardware_fields_are_checked_naming_the_field(services, hardware: dict, field: str) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    with pytest.raises(ValidationError) as raised:
        services.experiments.create(project_id, "bad", config={**TINY_TRAINING_CONFIG, "hardware": hardware})
    assert raised.value.details.get("field") == field


def test_a_ray_config_is_not_checked_against_this_machines_devices() -> None:
    config = parse_config({"hardware": {"executor": "ray", "num_workers": 4, "gpus_per_worker": 1, "cpus_per_worker": 8}})
    assert (config.hardware.num_workers, config.hardware.gpus_per_worker, config.hardware.cpus_per_worker) == (4, 1, 8)


def test_a_cluster_job_runs_the_local_workers_command_and_keeps_its_handle(tmp_path: Path) -> None:
    folder = tmp_path / "projects" / "proj-x" / "runs with space"
    folder.mkdir(parents=True)
    command = entrypoint("/opt/py/bin/python", TRAIN, folder, tmp_path, folder / "train.log")
    cd, _, run = command.partition(" && exec ")
    assert shlex.split(cd) == ["cd", str(folder)]
    assert shlex.split(run) == ["/opt/py/bin/python", "-m", "modelyard.core.jobs.worker", "run", "train", str(folder),
                                "--workspace", str(tmp_path), "--log", str(folder / "train.log")]
    assert dashboard_url("head:8265") == "http://head:8265" and dashboard_url("https://h:1") == "https://h:1"
    assert read_cluster_job(folder) is None and not runs_on_cluster(folder)
    write_cluster_job(folder, "ray", "http://head:8265", "modelyard-run-1")
    handle = read_cluster_job(folder)
    assert handle is not None and handle.submission_id == "modelyard-run-1" and runs_on_cluster(folder)
