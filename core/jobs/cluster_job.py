"""``cluster.json``: which cluster job executes a job, kept in the job's folder.

Written by the cluster executor when it submits the job and read back by any
later server (re-attaching after a restart), by readers that would otherwise
judge a job by a local pid (a worker on another node has none here), and by
the queue to pick the executor that answers for the job. Plain JSON, no Ray
import: a server without Ray installed can still tell a cluster job apart.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from ..jsonio import atomic_write_json
from ..timeutil import utc_now_iso

CLUSTER_JSON = "cluster.json"
#: Set in the environment of every job a cluster executor runs: its name (``ray``).
EXECUTOR_ENV = "MODELYARD_EXECUTOR"


class ClusterJob(msgspec.Struct, frozen=True):
    """A job's handle on its cluster: the executor, the cluster's address and the cluster's own job id."""

    executor: str
    address: str
    submission_id: str
    submitted_at: str = ""


def write_cluster_job(folder: Path, executor: str, address: str, submission_id: str) -> ClusterJob:
    cluster_job = ClusterJob(executor, address, submission_id, utc_now_iso())
    atomic_write_json(folder / CLUSTER_JSON, msgspec.to_builtins(cluster_job))
    return cluster_job


def read_cluster_job(folder: Path) -> ClusterJob | None:
    """The job's cluster handle; ``None`` for a job run on this machine (or an unreadable file)."""
    try:
        return msgspec.json.decode((folder / CLUSTER_JSON).read_bytes(), type=ClusterJob)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def forget_cluster_job(folder: Path) -> None:
    """The job runs here again (a resume on a local server): its old cluster handle no longer answers for it."""
    (folder / CLUSTER_JSON).unlink(missing_ok=True)


def runs_on_cluster(folder: Path) -> bool:
    return (folder / CLUSTER_JSON).is_file()
