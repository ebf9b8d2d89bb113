"""A real, private Ray cluster on this machine: one head node, bounded, and always stopped by whoever started it.

``ray start --head --block`` runs in its own session with its own temp
folder, ports and token (``RAY_AUTH_MODE=token``), so it never touches
another cluster on the machine (no bare ``ray stop``). Stopping it ends the
``--block`` process (which shuts the node down), then kills whatever process
still names the cluster's temp folder, the cluster's own process group, or
runs a job of its workspace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRayCluster:
    """A running head node: its job endpoint, its token (in a file, as the server reads it) and its processes."""

    address: str
    token_file: Path
    temp_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        stop_cluster(self)


def start_cluster(num_cpus: int = 2, timeout_s: float = 90.0) -> LocalRayCluster:
    """Start a head node with ``num_cpus`` CPUs, no GPU, everything on 127.0.0.1, token auth on; wait for its job endpoint."""
    temp_dir = Path(tempfile.mkdtemp(prefix="myray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    token = secrets.token_hex(32)
    token_file = temp_dir / "auth_token"
    token_file.write_text(token, encoding="utf-8")
    token_file.chmod(0o600)
    dashboard = free_port()
    worker_base = 20000 + secrets.randbelow(20000)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_JOB_STOP_WAIT_TIME_S": "3", "OMP_NUM_THREADS": "1"}
    ray = str(Path(sys.executable).with_name("ray"))
    argv = [ray, "start", "--head", "--block", f"--port={free_port()}", f"--num-cpus={num_cpus}", "--num-gpus=0",
            "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
            f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}", f"--min-worker-port={worker_base}",
            f"--max-worker-port={worker_base + 99}"]
    log_path = temp_dir / "ray-start.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = LocalRayCluster(f"http://127.0.0.1:{dashboard}", token_file, temp_dir, process, log_path)
    try:
        _wait_for_jobs_endpoint(cluster, token, timeout_s)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def _wait_for_jobs_endpoint(cluster: LocalRayCluster, token: str, timeout_s: float) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout_s
    while True:
        if cluster.process.poll() is not None:
            raise RuntimeError(f"ray start exited {cluster.process.returncode}: {cluster.log_path.read_text()[-2000:]}")
        try:
            JobSubmissionClient(cluster.address, headers={"Authorization": f"Bearer {token}"}).list_jobs()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _cluster_pids(cluster: LocalRayCluster, also: tuple[str, ...] = ()) -> list[int]:
    """Processes of this cluster only: those naming its temp folder (or one of ``also``), or in its process group."""
    markers = [str(cluster.temp_dir).encode(), *(marker.encode() for marker in also)]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                continue  # already dead, waiting to be reaped
            cmdline = (entry / "cmdline").read_bytes()
            in_group = os.getpgid(pid) == cluster.process.pid
        except (OSError, ProcessLookupError, IndexError):
            continue
        if in_group or any(marker in cmdline for marker in markers):
            found.append(pid)
    return found


def stop_cluster(cluster: LocalRayCluster, timeout_s: float = 1.0, also: tuple[str, ...] = ()) -> None:
    """End this cluster's processes (never another cluster's) and remove its temp folder.

    ``also``: strings naming more processes of this cluster in their command line (a test's workspace: the
    jobs' entrypoints run in sessions of their own). A test cluster keeps nothing worth a drain: what is not
    gone ``timeout_s`` after SIGTERM is killed.
    """
    if cluster.process.poll() is None:
        cluster.process.send_signal(signal.SIGTERM)  # `ray start --block` shuts its node down
        with contextlib.suppress(subprocess.TimeoutExpired):
            cluster.process.wait(timeout_s)
    deadline = time.monotonic() + 10
    while (pids := _cluster_pids(cluster, also)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    if cluster.process.poll() is None:
        cluster.process.kill()
        cluster.process.wait()
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def local_ray_cluster(num_cpus: int = 2) -> Iterator[LocalRayCluster]:
    cluster = start_cluster(num_cpus)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
