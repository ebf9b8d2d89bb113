"""The training engine: one run folder in, one trained model and its files out.

``train_run`` is what the worker process (``python -m modelyard worker train``)
and the foreground ``modelyard train`` both call. It reads the frozen
``config.yaml`` and the project's dataset (through its index, mapped from the
``.dataset.index`` cache: ``DatasetView``), builds the network through
the architecture registry, and fits the task LightningModule with the
DataModule, writing everything the run protocol promises
(``docs/internals/run-protocol.md``): status, events, metrics, heartbeat,
checkpoints and ``reproducibility.json``. Any failure ends as status
``failed`` with the error's type and message, never as a silent exit.

Under DDP Lightning re-runs this process's command line once per extra rank
(``LOCAL_RANK`` set); those ranks train but never write run files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import yaml

from ...datasets.view import DatasetView, load_dataset_view
from ...errors import CheckpointError, ValidationError
from ...jobs.process import is_extra_rank, start_ticks
from ...jsonio import atomic_write_json, remove_stale_temp_files
from ...plugin_manager import PluginHost, default_plugin_host
from ...plugin_types import Task, TrainingContext
from ...projects import read_project
from ...records import JobError, Run, RunEarlyStop, RunPrecision
from ...timeutil import parse_iso, utc_now_iso
from ...workspace import Workspace
from ..config import ExperimentConfig, config_hash, config_to_dict, monitor_of, parse_config
from ..run_folder import (
    ACTIVE_STATUSES,
    CHECKPOINTS,
    CONFIG_YAML,
    REPRODUCIBILITY_JSON,
    EventLog,
    describe_early_stop,
    read_run,
    update_run,
)

if TYPE_CHECKING:
    from .callbacks import HeartbeatPacer

log = logging.getLogger(__name__)

#: Set by ``modelyard train`` so DDP ranks re-running its command line train the same run folder.
RUN_DIR_ENV = "MODELYARD_RUN_DIR"

_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*smaller than the logging interval.*",
    # the module reduces its epoch sums across ranks itself before logging them
    r".*when logging on epoch level in distributed setting.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*overridden `on_after_batch_transfer` in `LightningModule`.*",
)


def is_rank_zero() -> bool:
    """True in the process that owns the run files (the only one without DDP, rank 0 with it)."""
    return not is_extra_rank()


def global_rank() -> int:
    """This process's DDP rank as Lightning's launcher sets it (one machine: the local rank; 0 in the first process).

    A Ray Train worker has its rank across every node from Ray Train (``ray_train.world_rank``).
    """
    from .ray_train import world_rank

    ray_rank = world_rank()
    return ray_rank if ray_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))


def ddp_child_run_dir() -> Path | None:
    """The run folder when this process is an extra DDP rank launched by ``modelyard train``."""
    value = os.environ.get(RUN_DIR_ENV)
    return Path(value) if value and not is_rank_zero() else None


def load_run_config(run_dir: Path) -> ExperimentConfig:
    """The frozen config of a run (``yaml.safe_load``: plain data only)."""
    try:
        document = yaml.safe_load((run_dir / CONFIG_YAML).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(f"{run_dir.name} has no {CONFIG_YAML}", field="config") from None
    except yaml.YAMLError as exc:
        raise ValidationError(f"{CONFIG_YAML} is not valid YAML: {exc}", field="config") from None
    return parse_config(document or {})


# -- hardware --------------------------------------------------------------------------


@dataclass(frozen=True)
class HardwarePlan:
    """How Lightning is asked to run: accelerator, device indices or count, strategy and precision (and why)."""

    accelerator: str
    devices: int | list[int]
    world_size: int
    ddp: bool
    precision: str
    device_ids: tuple[str, ...]
    precision_reason: str = ""
    #: DDP across Ray Train workers (``hardware.executor: ray``): Lightning gets Ray's strategy and environment
    on_ray: bool = False


#: The compute capability from which a GPU has bf16 in hardware (Ampere); older ones only emulate it.
BF16_NATIVE_CAPABILITY = (8, 0)


def choose_precision(requested: str, accelerator: str, device_indices: Sequence[int] = ()) -> tuple[str, str]:
    """Lightning's precision for ``requested`` on these devices, and why (recorded in run.json).

    ``auto``: 32-bit on the CPU; on GPUs bf16-mixed only when *every* configured
    GPU has native bf16 (compute capability 8.0 or more), else 16-mixed.
    ``torch.cuda.is_bf16_supported()`` is not asked: it counts emulated bf16,
    which is slower than fp16, and looks at the current device only.
    """
    if requested != "auto":
        return ("32-true" if requested == "32" else requested), "asked for in the config"
    if accelerator == "cpu":
        return "32-true", "CPU: mixed precision brings no speed-up there, full 32-bit is used"
    import torch

    for index in device_indices:
        major, minor = torch.cuda.get_device_capability(index)
        if (major, minor) < BF16_NATIVE_CAPABILITY:
            return "16-mixed", f"cuda:{index} (compute {major}.{minor}) has no native bf16"
    names = ", ".join(f"cuda:{i}" for i in device_indices)
    return "bf16-mixed", f"every configured GPU ({names}) has native bf16 (compute 8.0+)"


def resolve_precision(requested: str, accelerator: str, device_indices: Sequence[int] = ()) -> str:
    """Lightning's precision string for ``requested`` (see ``choose_precision``)."""
    if requested == "auto" and accelerator != "cpu" and not device_indices:
        import torch

        device_indices = [torch.cuda.current_device()]
    return choose_precision(requested, accelerator, device_indices)[0]


def hardware_plan(config: ExperimentConfig) -> HardwarePlan:
    hardware = config.hardware
    requested = config.training.precision
    if hardware.executor == "ray":  # one device per Ray Train worker, the worker's own (Ray sets what it sees)
        accelerator = "gpu" if hardware.gpus_per_worker else "cpu"
        precision, reason = choose_precision(requested, accelerator, [0] if hardware.gpus_per_worker else [])
        workers = hardware.num_workers
        return HardwarePlan(accelerator, "auto", workers, True, precision,  # type: ignore[arg-type]
                            tuple(f"ray-worker:{rank}" for rank in range(workers)), reason, on_ray=True)
    ids = tuple(hardware.devices)
    if ids == ("cpu",):
        world = hardware.num_processes
        precision, reason = choose_precision(requested, "cpu")
        return HardwarePlan("cpu", world, world, world > 1, precision, ids, reason)
    indices = [int(device.split(":", 1)[1]) for device in ids]
    ddp = len(indices) > 1 or hardware.strategy == "ddp"
    precision, reason = choose_precision(requested, "gpu", indices)
    return HardwarePlan("gpu", indices, len(indices), ddp, precision, ids, reason)


def _strategy(plan: HardwarePlan) -> Any:
    if plan.on_ray:
        from .ray_train import lightning_strategy

        return lightning_strategy(plan.accelerator)
    if not plan.ddp:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(process_group_backend="gloo" if plan.accelerator == "cpu" else "nccl")


# -- reproducibility -----------------------------------------------------------------------


def dataset_fingerprint(dataset: DatasetView) -> str:
    """sha256 over the sorted ``(image sha256, label)`` pairs: same images and labels, same fingerprint.

    An image's label is its first ``label`` annotation's ``class_name`` (``""``
    for none). The pairs are sorted by the columns (a hex digest sorts as its
    bytes), so only the JSON the hash reads is built per image.
    """
    import numpy as np

    index = dataset.index
    labels = dataset.annotations(np.arange(len(index)), "label")
    first = np.flatnonzero(np.diff(labels.owner, prepend=-1) != 0)
    codes = np.full(len(index), -1, dtype=np.int64)
    codes[labels.owner[first]] = labels.name_code[first]
    names = [*labels.names, ""]  # code -1 reads the trailing ""
    rank = {name: r for r, name in enumerate(sorted(set(names)))}
    label_rank = np.array([rank[name] for name in names], dtype=np.int64)[codes]
    digest = np.ascontiguousarray(index.arrays["sha"]).view(">u8")  # [n, 4]: big-endian words sort as the bytes do
    order = np.lexsort((label_rank, *(digest[:, k] for k in range(digest.shape[1] - 1, -1, -1))))
    hexes = index.arrays["sha"][order].tobytes().hex()
    pairs = [(hexes[64 * i : 64 * i + 64], names[code]) for i, code in enumerate(codes[order].tolist())]
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode("utf-8")).hexdigest()


def split_hash(dataset: DatasetView, split_index: int) -> str:
    """sha256 over the sorted ``(filename, subset)`` assignment of one split (``none`` past an image's list).

    File names are unique in the index, so the pairs' order is its filename order.
    """
    order = dataset.index.arrays["order_filename"]
    pairs = list(zip(dataset.filenames(order), dataset.split_values(split_index, order), strict=True))
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode("utf-8")).hexdigest()


def _versions() -> dict[str, str]:
    import lightning
    import PIL
    import torch
    import torchmetrics
    import torchvision

    import modelyard

    return {
        "python": platform.python_version(),
        "modelyard": modelyard.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "pillow": PIL.__version__,
    }


def reproducibility_record(config: ExperimentConfig, dataset: DatasetView, plan: HardwarePlan, datamodule: Any) -> dict[str, Any]:
    names = dataset.index.split_names
    return {
        "written_at": utc_now_iso(),
        "config_hash": config_hash(config),
        "dataset_fingerprint": dataset_fingerprint(dataset),
        "split_index": config.split_index,
        "split_name": names[config.split_index] if config.split_index < len(names) else None,
        "split_hash": split_hash(dataset, config.split_index),
        "seed": config.training.seed,
        "precision": plan.precision,
        "precision_reason": plan.precision_reason,
        "accelerator": plan.accelerator,
        "devices": list(plan.device_ids),
        "world_size": plan.world_size,
        "classes": datamodule.class_names,
        "num_train_images": len(datamodule.train_items),
        "num_val_images": len(datamodule.val_items),
        "normalization": {"mean": datamodule.mean, "std": datamodule.std},
        "data_cache": "memory" if datamodule.cache_used else "none",
        "num_workers": datamodule.resolved_num_workers(),
        "versions": _versions(),
        "platform": platform.platform(),
    }


# -- status bookkeeping ----------------------------------------------------------------------


def _mark_running(workspace: Workspace, run_dir: Path) -> None:
    def change(record: Run) -> Run:
        record.status = "running"
        record.started_at = record.started_at or utc_now_iso()
        record.finished_at = None
        record.error = None
        record.worker_pid, record.worker_started, record.worker_pgid = os.getpid(), start_ticks(os.getpid()), os.getpgid(0)
        created = parse_iso(record.created_at)
        if record.timings.queued_s is None and created is not None:
            record.timings.queued_s = round(max(0.0, time.time() - created), 3)
        return record

    update_run(workspace, run_dir, change)



def _finish(workspace: Workspace, run_dir: Path, events: EventLog, status: str, error: JobError | None,
            session_s: float, stopped_early: RunEarlyStop | None = None) -> None:
    def change(record: Run) -> Run:
        record.status = status
        record.finished_at = utc_now_iso()
        record.error = error
        record.stopped_early = stopped_early
        record.timings.train_s = round((record.timings.train_s or 0.0) + session_s, 3)
        return record

    record = update_run(workspace, run_dir, change)
    if error is not None:
        events.append("log", {"level": "error", "message": f"{error.type}: {error.message}"})
    if stopped_early is not None:
        events.append("log", {"level": "info", "message": describe_early_stop(stopped_early)})
    events.append("status", {"status": status, **({"error": msgspec.to_builtins(error)} if error else {})})
    events.append("end", {"status": status, "best_metrics": record.best_metrics, "best_epoch": record.best_epoch,
                          "stopped_early": msgspec.to_builtins(stopped_early)})


# -- the run -------------------------------------------------------------------------------


def _resume_point(run_dir: Path, events: EventLog | None) -> tuple[Path | None, int]:
    """``(ckpt_path, epochs_done)`` to continue from; ``(None, 0)`` when the run never saved a checkpoint.

    Every candidate is loaded with ``weights_only=True`` first; a damaged
    ``last.ckpt`` falls back to ``best.ckpt``; when nothing loads the run fails
    with ``CheckpointError`` naming the problem.
    """
    from ..checkpoints import LAST, usable_checkpoint

    folder = run_dir / CHECKPOINTS
    point = usable_checkpoint(folder)
    if point is None:
        if events is not None:
            events.append("log", {"level": "warning", "message": "no checkpoint to resume from; training from epoch 0"})
        return None, 0
    if point.fallback_from is not None:
        if events is not None:
            point.promote_to_last()
            events.append("log", {"level": "warning",
                                  "message": f"{LAST} is damaged; resuming from best.ckpt (epoch {point.epochs_done})"})
    if events is not None:
        events.append("log", {"level": "info",
                              "message": f"resuming from {LAST} ({point.epochs_done} complete epoch(s) so far)"})
    return folder / LAST, point.epochs_done


def train_run(
    workspace: Workspace,
    run_dir: Path,
    resume: bool = False,
    progress_bar: bool = False,
    plugins: PluginHost | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Train the run in ``run_dir`` to its end and return the final status.

    ``clock`` times the epochs (``time_s``, ``images_per_s``); the benchmark
    passes ``time.process_time`` to count CPU seconds on a machine shared with
    other load.

    ``completed``, ``stopped`` (``stop.request``, Ctrl-C or SIGTERM; ``last.ckpt``
    saved) or ``failed`` (``run.json.error`` says why). A run that is not
    ``pending``/``running`` is left alone and its status returned.
    """
    run_dir = Path(run_dir).resolve()
    rank0 = is_rank_zero()
    events = EventLog(workspace, run_dir)
    record = read_run(run_dir)
    if rank0 and record.status not in ACTIVE_STATUSES:
        log.warning("run %s is %s, not pending or running; nothing to do", run_dir.name, record.status)
        return record.status
    from .callbacks import HeartbeatPacer

    heartbeat = HeartbeatPacer(run_dir) if rank0 else None
    if heartbeat is not None:
        heartbeat.beat(force=True)  # alive before the (possibly long) imports, decoding and setup
    session_start = time.monotonic()
    state: dict[str, Any] = {}
    status, error = "failed", None
    try:
        if rank0:
            # a previous attempt killed while saving a checkpoint left its temp file; this worker is the run's one
            # claimant now, and only the worker writes in checkpoints/, so nothing else is writing there
            remove_stale_temp_files(run_dir / CHECKPOINTS, min_age_s=0)
            _mark_running(workspace, run_dir)
            events.append("status", {"status": "running", "resumed": resume})
        status = _fit(workspace, run_dir, record, events if rank0 else None, resume, progress_bar, plugins, state, clock,
                      heartbeat)
    except BaseException as exc:  # the run must end with a recorded status whatever happened
        callback = state.get("callback")
        if callback is not None and callback.interrupted_by is not None:
            status = "stopped"
            if rank0:
                events.append("log", {"level": "warning", "message": f"{callback.interrupted_by}: stopped, last.ckpt kept"})
        elif isinstance(exc, KeyboardInterrupt):
            status = "stopped"
        else:
            status, error = "failed", JobError.of(exc)
            log.exception("run %s failed", run_dir.name)
    finally:
        loggers = state.get("loggers")
        if loggers is not None:  # before the final status: config.yaml, metrics.json and best.ckpt are all there
            loggers.finish(status)
        if rank0:
            _finish(workspace, run_dir, events, status, error, time.monotonic() - session_start,
                    state.get("stopped_early"))
    return status


def _fit(
    workspace: Workspace,
    run_dir: Path,
    record: Run,
    events: EventLog | None,
    resume: bool,
    progress_bar: bool,
    plugins: PluginHost | None,
    state: dict[str, Any],
    clock: Callable[[], float],
    heartbeat: HeartbeatPacer | None = None,
) -> str:
    import lightning as L
    import torch
    import torch.utils.deterministic as torch_deterministic

    from ...models import build_model, recording_weight_loads
    from .callbacks import AtomicCheckpointIO, RunCheckpoint, RunFilesCallback
    from .training_plugins import ExperimentLoggers, build_training_plugins, hand_to_module
    from ..task_runtime import runtime_of
    from .data import ImageDataModule
    from .rng_state import RngStateCallback
    from .threads import pinned_threads, runtime_record

    for pattern in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    project_id = record.project_id
    if not run_dir.is_relative_to(workspace.project_dir(project_id)):
        raise ValidationError(f"run folder {run_dir} is not inside project {project_id}", field="run_dir")
    config = load_run_config(run_dir)
    task_id = read_project(workspace, project_id).task
    dataset = load_dataset_view(workspace.dataset_json(project_id), task_id)  # the index, never the parsed document
    plan = hardware_plan(config)
    if events is not None:  # what was chosen and why, visible in GET run before the first epoch
        choice = RunPrecision(requested=config.training.precision, precision=plan.precision, reason=plan.precision_reason)
        update_run(workspace, run_dir, lambda record: msgspec.structs.replace(record, precision=choice))
    L.seed_everything(config.training.seed, workers=True, verbose=False)

    host = plugins or default_plugin_host()
    task = host.tasks.get(task_id, field="task")
    runtime = runtime_of(task)
    datamodule = ImageDataModule(workspace.images_dir(project_id), dataset, config, runtime,
                                 pin_memory=plan.accelerator == "gpu", rank=global_rank() if plan.ddp else 0,
                                 world=plan.world_size, on_progress=heartbeat.beat if heartbeat is not None else None)
    datamodule.setup("fit")  # this rank's shard only
    model_cfg = config.model
    with recording_weight_loads() as weight_loads:  # what model.weights_path put in (and left out), for the record
        net = build_model(
            host.architectures,
            model_cfg.architecture,
            datamodule.num_classes,
            in_channels=config.data.channels,
            pretrained=model_cfg.pretrained,
            dropout=model_cfg.dropout,
            weights_path=model_cfg.weights_path,
            freeze_backbone=model_cfg.freeze_backbone,
            image_size=tuple(config.data.image_size),  # type: ignore[arg-type]
        )
    module_options = runtime.module_options(config, datamodule.class_names, datamodule.train_targets())
    module = runtime.build_module(
        net,
        classes=datamodule.class_names,
        config=config_to_dict(config),
        mean=datamodule.mean,
        std=datamodule.std,
        options=module_options,
    )
    module.batches_per_epoch = math.ceil(len(datamodule.train_set) / config.data.batch_size)
    # the config's registered callbacks, loss and metrics (every rank) and experiment loggers (rank 0 only)
    context = _training_context(workspace, run_dir, record, task.id, config, datamodule.class_names,
                                module_options.get("class_weights"), plan)
    chosen = build_training_plugins(host, config, context, with_loggers=events is not None)
    hand_to_module(module, chosen, task.id)
    ckpt_path, epochs_done = _resume_point(run_dir, events) if resume else (None, 0)
    if ckpt_path is not None and epochs_done >= config.training.max_epochs:
        raise CheckpointError(
            f"the checkpoint already holds {epochs_done} epoch(s) and max_epochs is {config.training.max_epochs}; "
            "resume with a higher max_epochs",
        )
    monitor = monitor_of(config, task)
    checkpoint = RunCheckpoint(run_dir / CHECKPOINTS, monitor, task.monitor_mode(monitor))
    callback = RunFilesCallback(workspace, run_dir, events or EventLog(workspace, run_dir), checkpoint,
                                start_epoch=epochs_done, clock=clock, heartbeat=heartbeat,
                                metric_keys=(*task.metrics, *(f"val/{name}" for name in chosen.metrics)))
    state["callback"] = callback
    loggers = ExperimentLoggers(chosen.loggers, events)
    if chosen.loggers:
        state["loggers"] = loggers
        # after the run files' own listener (registered by RunFilesCallback above): the epoch's record is written
        checkpoint.epoch_listeners.append(
            lambda trainer: loggers.log_epoch(callback.records[-1]) if trainer.is_global_zero and callback.records
            else None)
    flags_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                    torch_deterministic.fill_uninitialized_memory, torch.backends.cudnn.deterministic,
                    torch.backends.cudnn.benchmark)
    # entered before the Trainer is built: Lightning's DDP launcher reads OMP_NUM_THREADS
    with pinned_threads(config.hardware.cpu_threads):
        try:
            trainer = L.Trainer(
                accelerator=plan.accelerator,
                devices=plan.devices,
                strategy=_strategy(plan),
                precision=plan.precision,  # type: ignore[arg-type]
                max_epochs=config.training.max_epochs,
                accumulate_grad_batches=config.training.batch_multiplier,
                callbacks=[RngStateCallback(), callback, checkpoint, *_lightning_callbacks(config, task),
                           *chosen.callbacks],
                plugins=[AtomicCheckpointIO(), *_cluster_plugins(plan)],
                logger=False,
                enable_checkpointing=True,
                enable_progress_bar=progress_bar,
                enable_model_summary=progress_bar,
                num_sanity_val_steps=0,
                use_distributed_sampler=False,  # the DataModule shards itself (no padded, double-counted val images)
                deterministic="warn" if plan.accelerator == "cpu" else False,
                benchmark=plan.accelerator == "gpu",
                default_root_dir=run_dir,
            )
            if plan.on_ray:
                from .ray_train import prepare_lightning

                prepare_lightning(trainer)
            if plan.accelerator == "gpu":
                torch.set_float32_matmul_precision("high")
            # Deterministic mode also fills every new tensor's memory with NaN (a debugging aid for reads of
            # uninitialised memory): ~5 % of a CPU step, and nothing to do with reproducible results.
            torch_deterministic.fill_uninitialized_memory = False
            if events is not None:
                if not (run_dir / REPRODUCIBILITY_JSON).exists():
                    record_facts = {**reproducibility_record(config, dataset, plan, datamodule),
                                    **runtime_record(config.hardware.cpu_threads),
                                    "initial_weights": [report.as_record() for report in weight_loads]}
                    atomic_write_json(run_dir / REPRODUCIBILITY_JSON, record_facts)
                for report in weight_loads:
                    if report.skipped or report.reinitialised:
                        events.append("log", {"level": "info", "message": (
                            f"{report.source}: loaded {len(report.loaded)} tensors; the head starts freshly initialised "
                            f"(skipped from the file: {', '.join(report.skipped) or 'none'})")})
                events.append("log", {"level": "info", "message": (
                    f"training {model_cfg.architecture} on {', '.join(plan.device_ids)} ({plan.precision}, "
                    f"{plan.world_size} process(es), {torch.get_num_threads()} CPU thread(s)): "
                    f"{len(datamodule.train_items)} train / {len(datamodule.val_items)} val images, "
                    f"{config.training.max_epochs} epoch(s)")})
            loggers.start(config)
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        finally:  # Lightning sets process-wide determinism flags, we set threads; leave the process as it was
            torch.use_deterministic_algorithms(flags_before[0], warn_only=flags_before[1])
            torch_deterministic.fill_uninitialized_memory = flags_before[2]
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags_before[3], flags_before[4]
            callback.close()
    if callback.stop_requested or callback.interrupted_by is not None:
        return "stopped"
    if trainer.interrupted:
        return "stopped"
    state["stopped_early"] = _early_stop_of(trainer, config)
    return "completed"


def _cluster_plugins(plan: HardwarePlan) -> list[Any]:
    """Lightning's cluster environment: Ray Train's on Ray workers (ranks and world size from Ray), else Lightning's own."""
    if not plan.on_ray:
        return []
    from .ray_train import lightning_environment

    return [lightning_environment()]


def _training_context(workspace: Workspace, run_dir: Path, record: Run, task: str, config: ExperimentConfig,
                      classes: list[str], class_weights: list[float] | None, plan: HardwarePlan) -> TrainingContext:
    """What the config's callbacks, loggers, loss and metrics are built with."""
    return TrainingContext(
        run_dir=run_dir, run_id=run_dir.name, project_id=record.project_id,
        project_name=str(read_project(workspace, record.project_id).name), experiment_id=record.experiment_id,
        task=task, config=config_to_dict(config), class_names=list(classes), workspace=workspace.root,
        rank=global_rank() if plan.ddp else 0, world_size=plan.world_size,
        class_weights=list(class_weights) if class_weights else None,
    )


def _early_stop_of(trainer: Any, config: ExperimentConfig) -> RunEarlyStop | None:
    """Where and why early stopping ended this session before ``max_epochs`` (``None`` when it did not)."""
    from lightning.pytorch.callbacks import EarlyStopping

    epochs_run = int(trainer.current_epoch) + 1 if trainer.should_stop else int(trainer.current_epoch)
    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.stopped_epoch > 0 and epochs_run < config.training.max_epochs:
            return RunEarlyStop(epoch=int(callback.stopped_epoch) + 1, monitor=str(callback.monitor),
                                patience=int(callback.patience), max_epochs=int(config.training.max_epochs))
    return None


def _lightning_callbacks(config: ExperimentConfig, task: Task) -> list[Any]:
    from lightning.pytorch.callbacks import EarlyStopping

    stopping = config.training.early_stopping
    if stopping is None:
        return []
    # Checked after validation only: a stop-shortened epoch has no validation and must not count.
    return [EarlyStopping(monitor=stopping.monitor, patience=stopping.patience, mode=task.monitor_mode(stopping.monitor),
                          min_delta=stopping.min_delta, check_on_train_epoch_end=False)]
