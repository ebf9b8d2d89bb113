"""What a training worker writes into its run folder while Lightning trains.

- ``AtomicCheckpointIO``: checkpoints go to a temp file that is fsynced and
  ``os.replace``d, so a kill never leaves a torn ``.ckpt``; loading is always
  ``weights_only=True`` (no pickle code runs).
- ``RunCheckpoint``: ``best.ckpt`` by the monitored metric, ``last.ckpt`` after
  every epoch, and the mid-epoch ``last.ckpt`` of a stop (a stop after an
  epoch's last step lets that epoch end normally instead).
- ``HeartbeatPacer``: touches ``heartbeat`` when training makes progress (a
  step, a validation batch, an epoch end, a stretch of setup such as cache
  decoding), at most once per ``HEARTBEAT_INTERVAL_S``. No thread: a worker
  stuck in a collective or a hung step stops heartbeating, and the server sees it.
- ``RunFilesCallback``: ``events.jsonl`` (progress at most ``1/PROGRESS_INTERVAL_S``
  per second, written by a background thread so training never waits on an
  fsync; one ``epoch`` event per epoch), ``metrics.json`` after every epoch,
  progress and metrics in ``run.json``, and ``stop.request`` honoured after the
  current step with ``last.ckpt`` saved. Only global rank 0 writes files.

Per-step work is a few clock reads and counters: the stop file is looked at
no more than every ``STOP_CHECK_INTERVAL_S``, and under DDP the ranks agree on
it with one reduction every ``STOP_SYNC_EVERY_STEPS`` steps (same step numbers
on every rank, so all stop after the same step and none waits for another).
With gradient accumulation a stop waits for the next optimizer step, so no
partly accumulated gradient is lost and the resume stays exact.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import msgspec
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ...jsonio import atomic_write_json, read_json
from ...records import Run
from ...workspace import Workspace
from ..checkpoints import BEST, LAST, read_checkpoint, write_checkpoint
from ..run_folder import (
    CHECKPOINTS,
    HEARTBEAT_INTERVAL_S,
    METRICS_JSON,
    STOP_REQUEST,
    EventLog,
    touch_heartbeat,
    update_run,
)

log = logging.getLogger(__name__)

#: Minimum seconds between two ``progress`` events (and run.json progress writes).
PROGRESS_INTERVAL_S = 0.5
#: Minimum seconds between two looks at ``stop.request`` (one process; under DDP rank 0 looks at sync steps).
STOP_CHECK_INTERVAL_S = 0.5
#: Under DDP the ranks share the stop decision every this many steps (steps 1, 1 + N, 1 + 2N, ...).
STOP_SYNC_EVERY_STEPS = 8


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temp file beside the target, fsync, ``os.replace``; load with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        write_checkpoint(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        loaded: dict[str, Any] = read_checkpoint(Path(path), map_location=map_location or "cpu")
        return loaded


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` (by the monitored metric) and ``last.ckpt`` after *every* epoch, plus the stop checkpoint.

    Lightning's own ``save_last`` only refreshes ``last.ckpt`` when ``best`` improved,
    which would make a crash lose every epoch since the best one, so ``last`` is
    saved here. ``save_now`` writes ``last.ckpt`` mid-epoch (stop request, Ctrl-C,
    SIGTERM); the epoch-end saving Lightning still runs for the cut-short epoch
    is then skipped, so no file claims that partial epoch as complete and a
    resume continues it where it stopped. ``epoch_listeners`` run after
    ``best.ckpt`` and before ``last.ckpt`` of the epoch is written.
    """

    def __init__(self, dirpath: Path, monitor: str, mode: str) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=BEST.removesuffix(".ckpt"),
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        self.last_path = Path(dirpath) / LAST
        self.cut_short = False
        self.epoch_listeners: list[Callable[[L.Trainer], None]] = []

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the best score even when the run folder moved since (a copied or relocated workspace).

        Lightning keys this state by absolute paths and forgets the best score
        when they differ, which would let a worse epoch overwrite ``best.ckpt``.
        """
        old = state_dict.get("dirpath")
        new = self.dirpath
        if not old or not new or old == new:
            super().load_state_dict(state_dict)
            return

        def moved(path: Any) -> Any:
            return str(Path(new) / Path(path).name) if isinstance(path, str) and path.startswith(str(old)) else path

        state = dict(state_dict, dirpath=new)
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            state[key] = moved(state.get(key))
        state["best_k_models"] = {moved(k): v for k, v in (state.get("best_k_models") or {}).items()}
        super().load_state_dict(state)

    @staticmethod
    def after_last_step(trainer: L.Trainer) -> bool:
        """Whether the epoch's last training step is done (its validation and epoch end may still be to come)."""
        return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)

    def save_now(self, trainer: L.Trainer) -> bool:
        """Write ``last.ckpt`` with the current state (every rank calls it; rank 0 writes); ``False`` if not written.

        After an epoch's last step nothing is written: Lightning resumes such a
        checkpoint as a finished epoch and skips its validation and record, so
        the previous epoch's ``last.ckpt`` stays the resume point instead.
        """
        if self.after_last_step(trainer):
            return False
        trainer.save_checkpoint(self.last_path, self.save_weights_only)  # full state: resume continues exactly
        self.cut_short = True
        return True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.cut_short:
            return
        super().on_train_epoch_end(trainer, pl_module)
        # The epoch's record goes first: a kill between the two leaves a record newer than last.ckpt,
        # which a resume drops and retrains, rather than an epoch missing from metrics.json for good.
        for listener in self.epoch_listeners:
            listener(trainer)
        trainer.save_checkpoint(self.last_path, self.save_weights_only)  # full state: resume continues exactly

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.cut_short:
            super().on_validation_end(trainer, pl_module)


class HeartbeatPacer:
    """Touches ``run_dir/heartbeat`` when called, at most once per ``interval_s`` (monotonic clock).

    Called from training progress only, so the file goes stale when progress
    stops. ``submit`` (when given) runs the write elsewhere, e.g. on the
    callback's writer thread, so a step never waits on an fsync.
    """

    def __init__(self, run_dir: Path, interval_s: float = HEARTBEAT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = run_dir
        self.interval_s = interval_s
        self.clock = clock
        self._last = -math.inf
        self._lock = threading.Lock()

    def _write(self) -> None:
        try:
            touch_heartbeat(self.run_dir, os.getpid())
        except OSError as exc:  # a full disk must not kill training; the server will notice
            log.warning("heartbeat write failed: %s", exc)

    def beat(self, force: bool = False, submit: Callable[[Callable[[], None]], Any] | None = None) -> bool:
        """Write the heartbeat if ``interval_s`` passed since the last one (or ``force``); whether it was written."""
        now = self.clock()
        if not force and now - self._last < self.interval_s:
            return False
        with self._lock:  # decoding threads call this concurrently
            if not force and now - self._last < self.interval_s:
                return False
            self._last = now
        if submit is not None:
            submit(self._write)
        else:
            self._write()
        return True


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_JSON
    if not path.is_file():
        return []
    data = read_json(path)
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def best_record(records: list[dict[str, Any]], monitor: str, mode: str) -> dict[str, Any] | None:
    """The epoch record with the best ``monitor`` value (first one on ties)."""
    scored = [r for r in records if isinstance(r.get(monitor), int | float)]
    if not scored:
        return None
    pick: Callable[..., dict[str, Any]] = min if mode == "min" else max
    return pick(scored, key=lambda r: r[monitor])


class RunFilesCallback(L.Callback):
    """Reports a fit into the run folder (rank 0 only) and turns ``stop.request`` into a clean stop."""

    def __init__(
        self,
        workspace: Workspace,
        run_dir: Path,
        events: EventLog,
        checkpoint: RunCheckpoint,
        start_epoch: int = 0,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: HeartbeatPacer | None = None,
        metric_keys: Sequence[str] = (),
    ) -> None:
        self.workspace = workspace
        #: the task's epoch metrics, in the order an epoch record lists them
        self.metric_keys = tuple(metric_keys)
        #: rank 0's heartbeat, written from training progress (``None`` on other ranks)
        self.heartbeat = heartbeat
        self._last_stop_check = -math.inf
        self.run_dir = run_dir
        self.events = events
        self.checkpoint = checkpoint
        checkpoint.epoch_listeners.append(self._record_epoch)
        self.monitor = str(checkpoint.monitor)
        self.mode = str(checkpoint.mode)
        self.clock = clock
        self.stop_path = run_dir / STOP_REQUEST
        self.stop_requested = False
        self.interrupted_by: str | None = None
        #: epochs completed before this fit (a resume) and their records, kept in metrics.json
        self.records = [r for r in read_metrics(run_dir) if int(r.get("epoch", 0)) <= start_epoch]
        self.steps_per_epoch = 0
        self.total_epochs = 0
        self._world = 1
        self._epoch_started = 0.0
        self._fit_started = 0.0
        self._last_progress = 0.0
        self._images_since = 0
        self._epoch_images = 0
        self._last_batch_end = 0.0
        self._steps_done = 0
        self._optimizer_steps = 0  # batches of this fit after which the optimizer stepped (stop checks happen there)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelyard-progress")
        self._pending: Future[None] | None = None

    # -- helpers ---------------------------------------------------------------------
    def _write_enabled(self, trainer: L.Trainer) -> bool:
        return bool(trainer.is_global_zero)

    def _update_run(self, change: Callable[[Run], Run]) -> None:
        update_run(self.workspace, self.run_dir, change)

    def _checkpoint_paths(self) -> dict[str, str | None]:
        """Run-relative paths; ``last`` is written right after the epoch record."""
        best = self.run_dir / CHECKPOINTS / BEST
        return {"best": f"{CHECKPOINTS}/{BEST}" if best.is_file() else None, "last": f"{CHECKPOINTS}/{LAST}"}

    def _progress(self, trainer: L.Trainer, step_in_epoch: int, images_per_s: float | None) -> dict[str, Any]:
        elapsed = self.clock() - self._fit_started
        remaining_steps = max(0, (self.total_epochs - trainer.current_epoch) * self.steps_per_epoch - step_in_epoch)
        eta = round(remaining_steps * elapsed / self._steps_done, 1) if self._steps_done else None
        return {
            "epoch": trainer.current_epoch + 1,
            "total_epochs": self.total_epochs,
            "step": step_in_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "eta_s": eta,
            "images_per_s": round(images_per_s, 1) if images_per_s is not None else None,
        }

    # -- Lightning hooks -----------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._world = max(1, int(trainer.world_size))
        self._beat()  # the ranks have met and the model is set up

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.steps_per_epoch = int(trainer.num_training_batches) if trainer.num_training_batches != float("inf") else 0
        self.total_epochs = int(trainer.max_epochs or 0)
        self._fit_started = self._last_progress = self._epoch_started = self.clock()
        self._beat()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_started = self.clock()
        self._epoch_images = 0
        self._beat()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._beat()  # a batch arrived (the first one may have waited for loader workers to start)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._steps_done += 1
        pixels = batch[0] if isinstance(batch, tuple | list) and batch else None  # (images, targets): any task
        images = int(pixels.shape[0]) if isinstance(pixels, torch.Tensor) else 0
        self._images_since += images
        self._epoch_images += images
        if (batch_idx + 1) % max(1, int(trainer.accumulate_grad_batches)) == 0 or self.checkpoint.after_last_step(trainer):
            # only where the optimizer just stepped: a stop mid-accumulation would lose the summed gradients
            self._optimizer_steps += 1
            self._check_stop(trainer)
        self._beat()
        now = self._last_batch_end = self.clock()
        first = self._steps_done == 1  # tells a client steps_per_epoch at once
        if (now - self._last_progress < PROGRESS_INTERVAL_S and not first) or not self._write_enabled(trainer):
            return
        images_per_s = self._images_since * self._world / max(1e-9, now - self._last_progress)
        self._last_progress, self._images_since = now, 0
        if self._pending is not None and not self._pending.done():
            return  # the disk is slow: skip this report rather than queue behind it
        progress = self._progress(trainer, batch_idx + 1, images_per_s)
        self._pending = self._writer.submit(self._write_progress, progress)

    def _write_progress(self, progress: dict[str, Any]) -> None:
        """On the writer thread: fsyncs release the GIL, so training does not wait for the disk."""
        self.events.append("progress", progress)
        self._update_run(lambda record: record.with_fields(progress=progress))

    def flush(self) -> None:
        """Wait for the pending progress report, so later events keep their order behind it."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except Exception as exc:  # a failed progress report must not fail the run
            log.warning("progress report failed: %s", exc)

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        self.flush()
        self.events.append(event, data)

    def _beat(self, force: bool = False) -> None:
        if self.heartbeat is not None:
            self.heartbeat.beat(force, submit=self._writer.submit)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._beat()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._beat()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._beat()

    def _stop_file_seen(self) -> bool:
        """``stop.request`` exists; looked at no more than every ``STOP_CHECK_INTERVAL_S``."""
        now = time.monotonic()
        if now - self._last_stop_check < STOP_CHECK_INTERVAL_S:
            return False
        self._last_stop_check = now
        return self.stop_path.exists()

    def _check_stop(self, trainer: L.Trainer) -> None:
        if self.stop_requested:
            return
        if self._world > 1:
            # one reduction at agreed steps only; rank 0 looks at the file then (same step on every rank)
            if (self._optimizer_steps - 1) % STOP_SYNC_EVERY_STEPS:
                return
            seen = trainer.is_global_zero and self.stop_path.exists()
            requested = bool(trainer.strategy.reduce_boolean_decision(seen, all=False))
        else:
            requested = self._stop_file_seen()
        if not requested:
            return
        self.stop_requested = True
        trainer.should_stop = True
        if self.checkpoint.after_last_step(trainer):  # the epoch ends normally: validation, record, last.ckpt
            message = "stop requested: finishing this epoch's validation, saving last.ckpt and stopping"
        else:
            self.checkpoint.save_now(trainer)
            message = "stop requested: saved last.ckpt mid-epoch, stopping"
        if self._write_enabled(trainer):
            self._emit("log", {"level": "info", "message": message})

    def _record_epoch(self, trainer: L.Trainer) -> None:
        """After an epoch's checkpoints are saved: metrics.json, run.json and the ``epoch`` event."""
        metrics = trainer.callback_metrics
        record: dict[str, Any] = {"epoch": trainer.current_epoch + 1}
        for key in self.metric_keys:
            value = metrics.get(key)
            if value is not None:
                record[key] = round(float(value), 6)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        record["lr"] = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else None
        record["time_s"] = round(self.clock() - self._epoch_started, 3)
        # training throughput: the epoch's training loop only (validation and checkpoints are in time_s)
        train_s = max(1e-9, self._last_batch_end - self._epoch_started)
        record["images_per_s"] = round(self._epoch_images * self._world / train_s, 1)
        if not self._write_enabled(trainer):
            return
        self.records = [r for r in self.records if int(r.get("epoch", 0)) < record["epoch"]] + [record]
        atomic_write_json(self.run_dir / METRICS_JSON, self.records)
        best = best_record(self.records, self.monitor, self.mode)
        checkpoints = self._checkpoint_paths()
        progress = self._progress(trainer, self.steps_per_epoch, record["images_per_s"])
        progress["epoch"] = record["epoch"]

        def change(run: Run) -> Run:
            return run.with_fields(latest_metrics=record, best_metrics=best or {},
                                   best_epoch=best["epoch"] if best else None, checkpoints=checkpoints,
                                   progress={**msgspec.to_builtins(run.progress), **progress})

        self.flush()
        self._update_run(change)
        self._emit("epoch", record)

    def close(self) -> None:
        """Finish the pending report and stop the writer thread (idempotent)."""
        self.flush()
        self._writer.shutdown(wait=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Ctrl-C or SIGTERM: keep the work done so far in last.ckpt (single process only: DDP could hang)."""
        self.flush()
        if not isinstance(exception, KeyboardInterrupt | SIGTERMException):
            return
        self.interrupted_by = "SIGTERM" if isinstance(exception, SIGTERMException) else "KeyboardInterrupt"
        if self._world == 1 and trainer.global_step > 0:
            try:
                if not self.checkpoint.save_now(trainer):
                    log.info("%s after the epoch's last step: the previous epoch's last.ckpt is the resume point",
                             self.interrupted_by)
            except Exception as exc:  # best effort while shutting down
                log.warning("could not save last.ckpt after %s: %s", self.interrupted_by, exc)
