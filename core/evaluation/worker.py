"""The evaluation worker function: what the job layer runs for a claimed evaluation (``core/jobs/worker.py``).

Evaluation runs through Lightning, like training: the checkpoint is rebuilt
into its task's LightningModule and ``Trainer.predict`` runs it on the devices
the evaluation names (one device, several GPUs with DDP, or ``num_processes``
CPU processes with DDP over gloo). Every rank takes every ``world``-th image
(``rank, rank + world, ...``), padded with masked items to the same length, so
no image is duplicated or dropped; rank 0 gathers the per-image outputs once,
puts them back in item order and hands them to the task's ``evaluate``, which
computes the aggregate metrics and the per-image results. Images go through
the run's own validation path (decode, resize, ``val`` augmentations seeded
per image, the module's normalisation), so a single-process and a DDP
evaluation see exactly the same pixels.

The dataset's subsets come from its index (``DatasetView``, mapped from the
``.dataset.index`` cache), so no rank parses ``dataset.json`` itself.

The claiming process (rank 0) reports ``progress`` {done, total}, writes the
results file and marks the evaluation ``completed``; any error marks it
``failed`` with the reason. Extra DDP ranks, which Lightning starts by
re-running the worker's command line, join without a claim of their own.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelyardError
from ..jobs.folder import JobFolder
from ..jobs.kinds import EVALUATE
from ..jobs.process import is_extra_rank
from ..datasets.view import load_dataset_view
from ..plugin_manager import PluginHost, default_plugin_host
from ..records import Evaluation, JobError
from ..workspace import Workspace
from .results import RESULTS_FILE
from .service import subsets_of

if TYPE_CHECKING:
    from ..training.checkpoints import TrainedModel
    from ..training.task_runtime import TaskRuntime

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5


@dataclass(frozen=True)
class EvaluationPlan:
    """How Lightning runs an evaluation: accelerator, devices (count or GPU indices) and the number of ranks."""

    accelerator: str
    devices: int | list[int]
    world_size: int


def evaluation_plan(devices: list[str] | None, num_processes: int = 1) -> EvaluationPlan:
    """``cpu`` (``num_processes`` ranks) or the listed ``gpu:N`` devices (one rank each)."""
    ids = list(devices or ["cpu"])
    if ids == ["cpu"]:
        return EvaluationPlan("cpu", max(1, num_processes), max(1, num_processes))
    indices = [int(device.split(":", 1)[1]) for device in ids]
    return EvaluationPlan("gpu", indices, len(indices))


def torch_device(devices: list[str] | None) -> str:
    """``cpu`` or ``cuda:N`` for a device id from ``/api/system/devices`` (the first one)."""
    device = (devices or ["cpu"])[0]
    return "cpu" if device == "cpu" else "cuda:" + device.split(":", 1)[1]


def run_evaluation(workspace: Workspace, eval_dir: Path, plugins: PluginHost | None = None) -> str:
    """Run one claimed evaluation job to its end; returns the final status (``completed``/``failed``/``skipped``)."""
    job = EVALUATE.job(workspace, eval_dir)
    extra_rank = is_extra_rank()
    record = job.read() if extra_rank else job.claimed_record()
    if record is None:
        log.info("evaluation %s is not claimed to run; nothing to do", eval_dir.name)
        return "skipped"
    try:
        outcome = _evaluate(workspace, job, record, plugins or default_plugin_host(), report=not extra_rank)
    except Exception as exc:
        log.error("evaluation %s failed:\n%s", eval_dir.name, traceback.format_exc())
        if not extra_rank:
            job.finish(status="failed", error=JobError.of(exc))
        return "failed"
    if not extra_rank:
        job.finish(status="completed", **outcome)
    return "completed"


def _evaluate(workspace: Workspace, job: JobFolder[Evaluation], record: Evaluation, plugins: PluginHost,
              report: bool) -> dict[str, Any]:
    from ..training.checkpoints import load_trained_model
    from ..training.task_runtime import runtime_of

    trained = load_trained_model(workspace, record.project_id, record.run_id, record.checkpoint,
                                 experiment_id=record.experiment_id, plugins=plugins)
    runtime = runtime_of(plugins.tasks.get(trained.task, field="task"))
    dataset = load_dataset_view(workspace.dataset_json(record.project_id), trained.task)  # the index, never the document
    items: list[tuple[str, str, Any]] = []
    skipped = 0
    for subset in subsets_of(record.split_subset):
        samples, dropped = runtime.evaluation_samples(dataset, record.split_index, subset, trained.image_size,
                                                      trained.classes)
        items.extend((name, subset, target) for name, target in samples)
        skipped += dropped
    if not items:
        raise ModelyardError("none of the subset's images is labelled with a class the model knows")
    plan = evaluation_plan(record.devices, record.num_processes)
    outputs = predict_outputs(trained, runtime, workspace.images_dir(record.project_id), items, plan,
                              record.batch_size, job if report else None)
    if outputs is None:  # an extra DDP rank: rank 0 evaluates
        return {}
    options = {"score_threshold": record.score_threshold} if record.score_threshold is not None else {}
    outcome = runtime.evaluate(items, outputs, trained.classes, options)
    outcome.results.save(job.folder / RESULTS_FILE)
    return {
        "metrics": outcome.metrics,
        "num_images": len(items),
        "skipped": skipped,
        "classes": trained.classes,
        "progress": {"done": len(items), "total": len(items)},
    }


def predict_outputs(trained: TrainedModel, runtime: TaskRuntime, images_dir: Path, items: list[tuple[str, str, Any]],
                    plan: EvaluationPlan, batch_size: int, job: JobFolder[Evaluation] | None) -> list[Any] | None:
    """Every item's ``predict_step`` output in item order on rank 0 (``None`` on the other ranks)."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from ..training.augmentations import compose_augmentations
    from ..training.worker.data import ImageDataset, collate_batch
    from ..training.worker.engine import global_rank
    from ..training.worker.sampling import VAL_STREAM, mix_seed

    config = trained.config
    strategy: Any = "auto"
    if plan.world_size > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo" if plan.accelerator == "cpu" else "nccl")
    # the rank Lightning's launcher gives this process (0 in the first one, before it starts the others)
    rank, world = (global_rank(), plan.world_size) if plan.world_size > 1 else (0, 1)
    ids = list(range(rank, len(items), world))
    pad = math.ceil(len(items) / world) - len(ids)
    collector = _collector(len(items), job, rank, world, len(ids))
    trainer = L.Trainer(accelerator=plan.accelerator, devices=plan.devices, strategy=strategy, precision="32-true",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False, callbacks=[collector],
                        default_root_dir=job.folder if job is not None else None)
    transform = compose_augmentations(config.data.augmentations.val, trained.image_size, "config.data.augmentations.val")
    shard = ImageDataset([items[i][0] for i in ids], runtime.target_store([items[i][2] for i in ids], pad), images_dir,
                         trained.image_size, trained.channels, transform, seed=mix_seed(VAL_STREAM, config.training.seed),
                         ids=ids, runtime=runtime)
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, collate_fn=collate_batch, num_workers=0)
    if plan.accelerator == "cpu":
        trained.use_fast_cpu_layout()
    with torch.inference_mode():
        trainer.predict(trained.module, dataloaders=loader, return_predictions=False)
    return collector.gathered if rank == 0 else None


def _collector(total: int, job: JobFolder[Evaluation] | None, rank: int, world: int, real: int) -> Any:
    """A Lightning callback: keeps this rank's per-image outputs, gathers every rank's to rank 0 in item order."""
    import lightning as L

    class Collector(L.Callback):
        def __init__(self) -> None:
            self.local: list[Any] = []
            self.gathered: list[Any] = []
            self._last_report = 0.0

        def on_predict_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                                 dataloader_idx: int = 0) -> None:
            self.local.extend(outputs)
            if job is not None and time.monotonic() - self._last_report >= PROGRESS_INTERVAL_S:
                self._last_report = time.monotonic()
                job.report_progress(min(total, len(self.local) * world), total)

        def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
            import torch.distributed as dist

            mine = self.local[:real]  # the padding items at the end of the shard count nowhere
            if world == 1:
                self.gathered = mine
                return
            shards: list[Any] = [None] * world
            dist.all_gather_object(shards, mine)
            ordered: list[Any] = [None] * total
            for shard_rank, shard in enumerate(shards):
                ordered[shard_rank::world] = shard
            self.gathered = ordered

    return Collector()
