"""One run trained across the workers of a Ray cluster (``hardware.executor: ray``; docs/cluster.md).

The run's Ray Job (``core/jobs/ray_executor.py``) runs the usual worker
command; for a ``hardware.executor: ray`` run that process is only the
driver: it asks Ray Train's ``TorchTrainer`` for ``num_workers`` workers with
``cpus_per_worker``/``gpus_per_worker`` each and waits. Every Ray Train worker
calls the engine's own ``train_run``, with Lightning DDP through Ray Train's
Lightning integration (``RayDDPStrategy``, ``RayLightningEnvironment``,
``prepare_trainer``). So what a run writes is what a local DDP run writes:
world rank 0 owns the run files (status, events, metrics, heartbeat,
``reproducibility.json``), Lightning saves each checkpoint once (rank 0), the
module reduces its epoch sums across ranks before logging them, a stop
request is reduced across ranks, and a resume hands ``last.ckpt`` (on the
shared filesystem) to every rank.

Why Ray Train and not Lightning's own cluster environment on Ray actors: Ray
Train places the workers (one placement group, each worker's CPUs and GPUs),
sets up the process group across nodes (backend, master address and port,
``CUDA_VISIBLE_DEVICES`` per worker) and notices a dead worker and ends the
whole group. With Lightning's environment on our own actors all of that would
be ours to write: a scheduler and a rendezvous beside Ray's.

A worker that dies (its process killed, its node lost) ends the group; the
driver then records the run ``interrupted`` (resumable), like a local worker
found dead. Nothing here imports Ray until a run really trains on it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from ...errors import ValidationError
from ...jobs.queue import end_by_server, lost_error
from ...workspace import Workspace
from ..run_folder import read_run

log = logging.getLogger(__name__)

#: Set in each Ray Train worker of a run: ranks come from Ray Train, and Lightning gets Ray's strategy.
RAY_WORKER_ENV = "MODELYARD_RAY_TRAIN_WORKER"
#: Ray Train's own bookkeeping of an attempt (removed when it ends), under the workspace every node mounts.
RAY_TRAIN_STORAGE = ".ray_train"


def world_rank() -> int | None:
    """This process's rank across all Ray Train workers of its run; ``None`` outside a Ray Train worker."""
    if os.environ.get(RAY_WORKER_ENV) != "1":
        return None
    return int(os.environ.get("RANK", "0"))


def _require_ray_worker() -> None:
    if world_rank() is None:
        raise ValidationError(
            "hardware.executor: ray trains only on the workers of a Ray cluster: run it through a server started "
            "with `modelyard serve --executor ray --ray-address URL` (docs/cluster.md)", field="config.hardware.executor")


def lightning_strategy(accelerator: str) -> Any:
    """Lightning DDP over the process group Ray Train has set up for this worker."""
    _require_ray_worker()
    from ray.train.lightning import RayDDPStrategy

    return RayDDPStrategy()


def lightning_environment() -> Any:
    """Ranks and world size as Ray Train assigned them (across every node)."""
    _require_ray_worker()
    from ray.train.lightning import RayLightningEnvironment

    return RayLightningEnvironment()


def prepare_lightning(trainer: Any) -> None:
    from ray.train.lightning import prepare_trainer

    prepare_trainer(trainer)


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the engine's ``train_run`` as one DDP rank of the run."""
    from .engine import train_run

    os.environ[RAY_WORKER_ENV] = "1"
    status = train_run(Workspace(Path(loop_config["workspace"])), Path(loop_config["run_dir"]),
                       resume=bool(loop_config["resume"]), progress_bar=False)
    if status == "failed":  # end the group: the other ranks would wait for this one in their next collective
        raise RuntimeError(f"rank {world_rank()} of the run failed (see the run's error and train.log)")


def train_on_ray(workspace: Workspace, run_dir: Path, resume: bool) -> str:
    """The driver: train the run on Ray Train workers, wait, and return its final status."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .engine import load_run_config

    hardware = load_run_config(run_dir).hardware
    use_gpu = hardware.gpus_per_worker > 0
    per_worker = {"CPU": float(hardware.cpus_per_worker), **({"GPU": float(hardware.gpus_per_worker)} if use_gpu else {})}
    name = f"{run_dir.name}-{secrets.token_hex(3)}"
    storage = workspace.root / RAY_TRAIN_STORAGE
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"workspace": str(workspace.root), "run_dir": str(run_dir), "resume": resume},
        scaling_config=ScalingConfig(num_workers=hardware.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=name, storage_path=str(storage), failure_config=FailureConfig(max_failures=0)),
    )
    log.info("run %s: training on %d Ray Train worker(s), %s each", run_dir.name, hardware.num_workers, per_worker)
    try:
        trainer.fit()
    except Exception as exc:  # a worker died or raised: the group is gone
        _record_lost(workspace, run_dir, exc)
    finally:
        shutil.rmtree(storage / name, ignore_errors=True)
        if ray.is_initialized():
            ray.shutdown()
    return read_run(run_dir).status


def _record_lost(workspace: Workspace, run_dir: Path, exc: BaseException) -> None:
    """The run's workers ended without rank 0 recording a final status: ``interrupted`` (resumable) when a worker
    died, ``failed`` when one raised. A status rank 0 did record stays."""
    from ...jobs.kinds import TRAIN
    from ...records import JobError

    died = _worker_died(exc)
    message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500]
    log.warning("run %s: Ray Train ended with %s", run_dir.name, message)
    if died:
        end_by_server(workspace, TRAIN, run_dir, TRAIN.lost_status, f"a Ray Train worker died ({message})",
                      frozenset({"running"}), error=lost_error(f"A Ray Train worker of the run died: {message}"))
    else:
        end_by_server(workspace, TRAIN, run_dir, "failed", f"a Ray Train worker failed ({message})",
                      frozenset({"running"}), error=JobError("WorkerError", message))


def _worker_died(exc: BaseException) -> bool:
    """Whether Ray Train ended because a worker's process or node was lost (not because our code raised)."""
    from ray.exceptions import ActorDiedError, NodeDiedError, RayActorError, WorkerCrashedError

    lost = (ActorDiedError, NodeDiedError, RayActorError, WorkerCrashedError)
    seen: list[BaseException] = [exc]
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict):
        seen.extend(value for value in failures.values() if isinstance(value, BaseException))
    cause = exc.__cause__
    while cause is not None and len(seen) < 20:
        seen.append(cause)
        cause = cause.__cause__
    return any(isinstance(error, lost) for error in seen) or "died" in str(exc).lower()
