"""The ``ray`` executor: every job is a Ray Job on a Ray cluster (docs/cluster.md).

Why Ray Jobs and not tasks or actors: a Ray Job's entrypoint is a shell
command, so it is exactly the local worker's command line
(``python -m modelyard.core.jobs.worker run KIND FOLDER``) and writes the job
folder exactly as a local worker does; its id (the submission id, kept in the
job's ``cluster.json``) is the cluster's and stays valid across restarts of
this server, so a restarted server re-attaches by asking for it; ``stop_job``
ends the entrypoint's whole process tree (SIGTERM, then SIGKILL); and the
server talks to the cluster only over the job endpoint (HTTP, token auth),
never joining it as a driver, so the server's lifetime and the jobs' are
independent. Tasks or actors would have needed the server to be a Ray driver
on a cluster node, detached actors to outlive it, and our own process
management inside them.

The cluster reserves resources (``entrypoint_num_cpus``/``entrypoint_num_gpus``
per job; a multi-worker training run asks Ray Train for its workers itself),
so this executor starts every pending job at once and a job waits, if it
must, in the cluster's queue (Ray status ``PENDING``: no liveness is judged).
"""

from __future__ import annotations

import logging
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ExecutorUnavailableError
from ..records import JobRecord, Run
from ..settings import Settings
from ..workspace import Workspace
from .cluster_job import EXECUTOR_ENV, read_cluster_job, write_cluster_job
from .folder import JobFolder
from .kinds import JobKind, job_devices
from .ray_support import require_ray

log = logging.getLogger(__name__)

WORKER_MODULE = "modelyard.core.jobs.worker"
#: How long ``kill`` waits for the cluster to report the job ended (Ray: SIGTERM, 3 s, then SIGKILL).
KILL_WAIT_S = 15.0
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
UNKNOWN = "UNKNOWN"  # the cluster did not answer: the job is not judged this tick


def dashboard_url(address: str) -> str:
    """The job endpoint's URL from ``--ray-address`` (``HOST:PORT`` gets ``http://``)."""
    return address if "://" in address else f"http://{address}"


def read_token(path: Path | None) -> str | None:
    """The cluster's token from ``--ray-token-file`` (``None``: Ray's own lookup, docs/cluster.md)."""
    if path is None:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ExecutorUnavailableError(f"cannot read the Ray token file {path}: {exc.strerror}",
                                       {"ray_token_file": str(path)}) from None
    if not token:
        raise ExecutorUnavailableError(f"the Ray token file {path} is empty", {"ray_token_file": str(path)})
    return token


def entrypoint(python: str, kind: JobKind, folder: Path, workspace_root: Path, log_path: Path) -> str:
    """The Ray Job's shell command: the local worker's command line, its output in the job's log."""
    argv = [python, "-m", WORKER_MODULE, "run", kind.name, str(folder), "--workspace", str(workspace_root),
            "--log", str(log_path)]
    return f"cd {shlex.quote(str(folder))} && exec {shlex.join(argv)}"


def cluster_resources(folder: Path, record: JobRecord) -> dict[str, float]:
    """What the job's entrypoint asks the cluster for (a Ray Train run asks for its workers itself)."""
    if isinstance(record, Run):
        from ..training.run_folder import CONFIG_YAML
        from ..training.config import load_config_file, parse_config

        hardware = parse_config(load_config_file(folder / CONFIG_YAML)).hardware
        if hardware.executor == "ray":
            return {"entrypoint_num_cpus": 0}  # the driver only waits; TorchTrainer reserves each worker
        gpus = sum(device.startswith("gpu:") for device in hardware.devices)
        return {"entrypoint_num_cpus": hardware.num_processes if not gpus else 1, "entrypoint_num_gpus": gpus}
    gpus = sum(device.startswith("gpu:") for device in job_devices(record))
    return {"entrypoint_num_cpus": 1, "entrypoint_num_gpus": min(gpus, 1)}


class RayExecutor:
    """Jobs as Ray Jobs on the cluster at ``settings.ray_address`` (see the module docstring)."""

    name = "ray"
    reserves_devices = False

    def __init__(self, workspace: Workspace, settings: Settings) -> None:
        require_ray()
        if not settings.ray_address:
            raise ExecutorUnavailableError(
                "the ray executor needs the cluster's job address: --ray-address http://HEAD:8265 "
                "(or MODELYARD_RAY_ADDRESS); see docs/cluster.md", {"executor": "ray"})
        self.workspace = workspace
        self.address = dashboard_url(settings.ray_address)
        self.token = read_token(settings.ray_token_file)
        self.python = settings.ray_python or sys.executable
        self._client: Any = None
        self._info: dict[str, tuple[str, str]] = {}  # submission id -> (status, message), this tick

    # -- the cluster ---------------------------------------------------------------
    def connect(self) -> None:
        """Reach the job endpoint (version and token checked); ``ExecutorUnavailableError`` when it does not answer."""
        from ray.job_submission import JobSubmissionClient

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        try:
            self._client = JobSubmissionClient(self.address, headers=headers)
        except Exception as exc:  # ConnectionError, AuthenticationError, RuntimeError: all say "cannot use it"
            raise ExecutorUnavailableError(
                f"cannot reach the Ray cluster's job endpoint at {self.address}: {exc}", {"ray_address": self.address},
            ) from None

    def client(self) -> Any:
        if self._client is None:
            self.connect()
        return self._client

    def status(self, submission_id: str) -> tuple[str, str]:
        """``(Ray status, message)`` of a cluster job, asked once per tick; ``UNKNOWN`` when the cluster did not answer."""
        if submission_id not in self._info:
            try:
                info = self.client().get_job_info(submission_id)
                self._info[submission_id] = (str(info.status.value), str(info.message or ""))
            except RuntimeError as exc:
                if "does not exist" not in str(exc):
                    log.warning("Ray job %s: cannot get its status: %s", submission_id, exc)
                    return UNKNOWN, str(exc)
                self._info[submission_id] = ("MISSING", "the cluster does not know this job (was it restarted?)")
            except Exception as exc:  # the cluster is unreachable right now: judge again next tick
                log.warning("Ray job %s: cannot get its status: %s", submission_id, exc)
                return UNKNOWN, str(exc)
        return self._info[submission_id]

    # -- the executor protocol --------------------------------------------------------
    def launch(self, kind: JobKind, folder: Path, job: JobFolder[JobRecord]) -> str:
        """Submit the claimed job as a Ray Job (its handle written to ``cluster.json`` first)."""
        record = job.read()
        submission_id = f"modelyard-{folder.name}-{secrets.token_hex(4)}"
        write_cluster_job(folder, self.name, self.address, submission_id)
        resources = cluster_resources(folder, record)
        try:
            self.client().submit_job(
                entrypoint=entrypoint(self.python, kind, folder, self.workspace.root, job.log_path),
                submission_id=submission_id,
                runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1", EXECUTOR_ENV: self.name}},
                metadata={"modelyard_job": folder.name, "modelyard_kind": kind.name},
                **resources,
            )
        except ExecutorUnavailableError:
            raise
        except Exception as exc:
            raise ExecutorUnavailableError(f"the Ray cluster refused job {folder.name}: {exc}",
                                           {"ray_address": self.address}) from None
        asked = ", ".join(f"{name.removeprefix('entrypoint_')}={value}" for name, value in resources.items())
        return f"Ray job {submission_id} ({asked})"

    def alive(self, kind: JobKind, folder: Path, record: JobRecord) -> bool:
        cluster_job = read_cluster_job(folder)
        if cluster_job is None:
            return False
        status, _ = self.status(cluster_job.submission_id)
        return status not in TERMINAL and status != "MISSING"

    def waiting_to_start(self, folder: Path) -> bool:
        cluster_job = read_cluster_job(folder)
        return cluster_job is not None and self.status(cluster_job.submission_id)[0] in ("PENDING", UNKNOWN)

    def lost_note(self, folder: Path, record: JobRecord) -> str:
        cluster_job = read_cluster_job(folder)
        if cluster_job is None:
            return "has no cluster job"
        status, message = self.status(cluster_job.submission_id)
        return f"(Ray job {cluster_job.submission_id}) ended {status}: {message.strip()[:300]}"

    def kill(self, kind: JobKind, folder: Path, record: JobRecord) -> bool:
        """Stop the Ray Job (SIGTERM, then SIGKILL after Ray's wait) and wait for the cluster to say it ended."""
        cluster_job = read_cluster_job(folder)
        if cluster_job is None:
            return True
        submission_id = cluster_job.submission_id
        try:
            self.client().stop_job(submission_id)
        except Exception as exc:
            log.warning("Ray job %s: stop failed: %s", submission_id, exc)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline:
            self._info.pop(submission_id, None)
            if self.status(submission_id)[0] in TERMINAL | {"MISSING"}:
                return True
            time.sleep(0.25)
        return False

    def housekeeping(self) -> None:
        self._info.clear()  # statuses are asked afresh next tick

    def shutdown(self) -> None:
        """Nothing to free: the cluster's jobs go on, and the next server re-attaches to them."""
        self._info.clear()
