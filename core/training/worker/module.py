"""The base LightningModule every task's training module builds on.

A task plugin's module (classification's cross-entropy classifier, a
detector, a regressor) receives the network an architecture plugin built (a
plain ``nn.Module``) and implements the steps and the metrics it logs. What
every task shares lives here, so each gets it the same way:

- ``uint8`` batches normalised on the device (4x less to copy than floats);
- the optimizer and the learning-rate schedule, re-planned when a run is extended;
- epoch training sums (``accumulate_train``) kept on the device, reduced once
  per epoch over the ranks and carried in every checkpoint, so the epoch a
  resume continues still reports every batch of it;
- hyperparameters as plain data (the config as builtins, class names,
  mean/std, the task id), so a checkpoint loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

#: OneCycle starts at lr / DIV and ends at lr / (DIV * FINAL_DIV), like ``torch.optim.lr_scheduler.OneCycleLR``.
ONECYCLE_DIV = 25.0
ONECYCLE_FINAL_DIV = 1e4
ONECYCLE_DEFAULT_PCT = 0.3


def lr_factor_fn(scheduler: dict[str, Any], total_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the base lr at optimizer step ``n``: linear warm-up, then the named schedule."""
    name = scheduler.get("name", "none")
    total_steps = max(1, total_steps)
    steps_per_epoch = max(1, steps_per_epoch)
    warmup = min(int(scheduler.get("warmup_epochs", 0)) * steps_per_epoch, total_steps - 1)
    gamma = float(scheduler.get("gamma", 0.1))
    step_size = int(scheduler.get("step_size", 10))
    milestones = [int(m) for m in scheduler.get("milestones", [])]

    def cosine(a: float, b: float, t: float) -> float:
        return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, t))))

    def factor(step: int) -> float:
        if name == "onecycle":
            peak = warmup if warmup > 0 else max(1, int(ONECYCLE_DEFAULT_PCT * total_steps))
            if step < peak:
                return cosine(1.0 / ONECYCLE_DIV, 1.0, step / peak)
            end = 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
            return cosine(1.0, end, (step - peak) / max(1, total_steps - 1 - peak))
        if step < warmup:
            return (step + 1) / (warmup + 1)
        epoch = step // steps_per_epoch
        if name == "cosine":
            return cosine(1.0, 0.0, (step - warmup) / max(1, total_steps - warmup))
        if name == "step":
            return float(gamma ** (epoch // step_size))
        if name == "multistep":
            return float(gamma ** sum(1 for m in milestones if epoch >= m))
        return 1.0

    return factor


def _anneal_start(scheduler: dict[str, Any], first_total: int, steps_per_epoch: int) -> int:
    """The step the annealing part of a schedule begins at in its first plan (after warm-up or onecycle's rise)."""
    total = max(1, first_total)
    warmup = min(int(scheduler.get("warmup_epochs", 0)) * max(1, steps_per_epoch), total - 1)
    if scheduler.get("name") == "onecycle" and warmup <= 0:
        return max(1, int(ONECYCLE_DEFAULT_PCT * total))
    return warmup


def planned_factor_fn(scheduler: dict[str, Any], first_total: int, steps_per_epoch: int,
                      replans: list[tuple[int, int]]) -> Callable[[int], float]:
    """``lr_factor_fn`` of the first plan, re-planned at each ``(at_step, new_total)`` of a run extension.

    From ``max(at_step, end of warm-up)`` on, ``cosine`` and ``onecycle`` anneal
    from the factor the previous plan had there to their end value at the new
    total, so the learning rate never jumps; earlier steps keep the previous
    plan (a warm-up is finished, not repeated). Epoch-based schedules (``step``,
    ``multistep``, ``none``) do not depend on the total and are unchanged.
    """
    factor = lr_factor_fn(scheduler, first_total, steps_per_epoch)
    name = scheduler.get("name", "none")
    if name not in ("cosine", "onecycle"):
        return factor
    end = 0.0 if name == "cosine" else 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
    last = 0 if name == "cosine" else 1  # cosine reaches its end at step == total, onecycle at total - 1
    warm = _anneal_start(scheduler, first_total, steps_per_epoch)
    for at_step, new_total in replans:
        factor = _replanned(factor, max(at_step, warm), new_total - last, end)
    return factor


def _replanned(previous: Callable[[int], float], start: int, end_step: int, end: float) -> Callable[[int], float]:
    begin = previous(start)
    span = max(1, end_step - start)

    def factor(step: int) -> float:
        if step < start:
            return previous(step)
        t = min(1.0, (step - start) / span)
        return end + (begin - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def normalize_uint8(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """A ``uint8`` NCHW batch as the network's float input: ``(pixel / 255 - mean[c]) / std[c]`` (``[1, C, 1, 1]`` stats)."""
    return images.float().div_(255.0).sub_(mean).div_(std)


class TaskModule(L.LightningModule):
    """Trains ``net`` on normalised images; a task subclass implements the steps (see the module docstring).

    Subclasses set ``TASK`` (the task id stored in checkpoints), implement
    ``training_step`` (calling ``accumulate_train`` with its per-batch sums),
    ``log_train_epoch``, ``validation_step`` and ``on_validation_epoch_end``.

    Extending a run (a resume with a larger ``max_epochs``) re-plans the
    learning-rate schedule instead of jumping: from the step the checkpoint was
    written at, ``cosine`` and ``onecycle`` anneal from the current learning rate
    to their end value over the new remaining steps; a warm-up (or onecycle's
    rise) still in progress finishes as first planned and is never repeated;
    ``step``, ``multistep`` and ``none`` depend on the epoch only and carry on.
    The plan (total steps and every re-plan) is stored in the checkpoint, so a
    run extended twice continues from its actual curve.
    """

    TASK: ClassVar[str] = ""

    def __init__(
        self,
        net: nn.Module | None = None,
        *,
        num_classes: int,
        class_names: list[str],
        config: dict[str, Any],
        mean: list[float],
        std: list[float],
        **options: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"num_classes": num_classes, "class_names": list(class_names), "config": config,
                                   "mean": list(mean), "std": list(std), "task": self.TASK, **options})
        if net is None:
            raise ValueError(f"{type(self).__name__} needs the network built by the architecture registry")
        self.net = net
        channels = len(mean)
        # Non-persistent: the state_dict holds exactly the network (``net.*``) and nothing to re-derive.
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, channels, 1, 1), persistent=False)
        #: this epoch's train sums on this rank (what ``accumulate_train`` added), plus the image count
        self._train_sums: torch.Tensor | None = None
        self._train_seen = 0
        #: the schedule plan: total optimizer steps first planned, then (at_step, new_total) per extension
        self._planned_total: int | None = None
        self._replans: list[tuple[int, int]] = []
        self._resumed_step: int | None = None
        self._planned_epochs: int | None = None
        #: train batches per epoch on this rank (set by the engine; see ``_stepping_batches``)
        self.batches_per_epoch: int | None = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, targets = batch
        if images.dtype == torch.uint8:
            images = normalize_uint8(images, self.mean, self.std)
        return images, targets

    # -- training sums -------------------------------------------------------------------
    def accumulate_train(self, sums: torch.Tensor, images: int) -> None:
        """Add one batch's sums (a fixed-length float vector of the task's choosing) and its image count."""
        sums = sums.detach().float()
        self._train_sums = sums if self._train_sums is None else self._train_sums.add_(sums)
        self._train_seen += int(images)

    def log_train_epoch(self, sums: torch.Tensor, images: float) -> None:
        """Log the epoch's training metrics from every rank's summed ``accumulate_train`` values."""

    def on_train_epoch_start(self) -> None:
        self._train_sums, self._train_seen = None, 0

    def _local_train_sums(self) -> torch.Tensor:
        width = int(self._train_sums.numel()) if self._train_sums is not None else 0
        sums = self._train_sums if self._train_sums is not None else torch.zeros(width, device=self.device)
        return torch.cat([sums.float(), torch.tensor([float(self._train_seen)], device=sums.device)])

    def sum_over_ranks(self, sums: torch.Tensor) -> torch.Tensor:
        """``sums`` added up over every DDP rank (itself in a single process); every rank must call it."""
        if self.trainer.world_size > 1:
            return self.trainer.strategy.reduce(sums, reduce_op="sum")
        return sums

    def on_train_epoch_end(self) -> None:
        """The epoch's sums over every rank's images (one reduction per epoch), handed to ``log_train_epoch``."""
        totals = self.sum_over_ranks(self._local_train_sums())
        if float(totals[-1]) > 0:
            self.log_train_epoch(totals[:-1], float(totals[-1]))

    # -- evaluation ---------------------------------------------------------------------------
    def predict_step(self, batch: tuple[torch.Tensor, Any], batch_idx: int, dataloader_idx: int = 0) -> list[Any]:
        """One output per image of the batch (padding items included: the evaluation drops them by position)."""
        images, targets = batch
        return self.evaluate_batch(images, targets)

    def evaluate_batch(self, images: torch.Tensor, targets: Any) -> list[Any]:
        """What the task's ``evaluate`` needs of each image (plain, picklable data: DDP gathers it)."""
        raise NotImplementedError(f"{type(self).__name__} cannot evaluate")

    # -- checkpoint state -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Every rank's epoch sums and the schedule plan, as plain data (``weights_only=True`` loads them).

        Every rank saves together (Lightning calls this on all of them), so the
        sums are gathered: each rank gets its own back on resume.
        """
        local = self._local_train_sums()
        if self.trainer.world_size > 1:
            per_rank = self.trainer.strategy.all_gather(local).reshape(-1, local.numel()).cpu().tolist()
        else:
            per_rank = [local.cpu().tolist()]
        checkpoint["modelyard"] = {
            "train_sums": per_rank,  # the task's sums then the image count, per rank, of this epoch so far
            "planned_total": self._planned_total,
            "replans": [list(r) for r in self._replans],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("modelyard") or {}
        per_rank = state.get("train_sums") or []
        rank = int(self.global_rank)
        if rank < len(per_rank) and per_rank[rank] and per_rank[rank][-1] > 0:
            *sums, seen = per_rank[rank]
            self._train_sums, self._train_seen = torch.tensor(sums, dtype=torch.float32), int(seen)
        else:
            self._train_sums, self._train_seen = None, 0
        planned = state.get("planned_total")
        self._planned_total = int(planned) if planned is not None else None
        # a checkpoint from before plans were stored: its own config says how many epochs were planned
        old_config = (checkpoint.get("hyper_parameters") or {}).get("config") or {}
        self._planned_epochs = int((old_config.get("training") or {}).get("max_epochs") or 0) or None
        self._replans = [(int(a), int(b)) for a, b in state.get("replans") or []]
        schedulers = checkpoint.get("lr_schedulers") or []
        self._resumed_step = int(schedulers[0].get("last_epoch", 0)) if schedulers else None

    def on_fit_start(self) -> None:
        if self._train_sums is not None:
            self._train_sums = self._train_sums.to(self.device)

    # -- optimisation ------------------------------------------------------------------------
    def _stepping_batches(self) -> int:
        """Optimizer steps of the whole fit.

        From ``batches_per_epoch`` when the engine set it: Lightning's
        ``estimated_stepping_batches`` builds the train loader before a
        checkpoint's loops are restored, and that loader then never gets its
        saved position back (the resumed epoch would restart at its first batch).
        """
        trainer = self.trainer
        if self.batches_per_epoch is None:
            return int(trainer.estimated_stepping_batches)
        per_epoch = math.ceil(self.batches_per_epoch / max(1, int(trainer.accumulate_grad_batches)))
        return per_epoch * max(1, int(trainer.max_epochs or 1))

    def configure_optimizers(self) -> Any:
        training = self.hparams["config"]["training"]
        opt = training["optimizer"]
        params = [p for p in self.net.parameters() if p.requires_grad]
        lr, weight_decay = float(opt["lr"]), float(opt["weight_decay"])
        optimizer: torch.optim.Optimizer
        if opt["name"] == "sgd":
            optimizer = torch.optim.SGD(params, lr=lr, momentum=float(opt["momentum"]), weight_decay=weight_decay)
        elif opt["name"] == "adam":
            optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        scheduler = training["scheduler"]
        if scheduler["name"] == "none" and not scheduler.get("warmup_epochs"):
            return optimizer
        total = self._stepping_batches()
        per_epoch = max(1, total // max(1, int(self.trainer.max_epochs or 1)))
        if self._planned_total is None:
            self._planned_total = per_epoch * self._planned_epochs if self._planned_epochs else total
        current = self._replans[-1][1] if self._replans else self._planned_total
        if total != current and self._resumed_step is not None:
            self._replans.append((self._resumed_step, total))
        factor = planned_factor_fn(scheduler, self._planned_total, per_epoch, self._replans)
        lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lambda_lr, "interval": "step", "frequency": 1}}
