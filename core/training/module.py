"""The one task LightningModule for classification.

It receives the network an architecture plugin built (a plain ``nn.Module``),
normalises ``uint8`` batches on the device, computes cross-entropy with the
configured label smoothing and class weights, keeps one torchmetrics object
per stage and logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``,
``val/f1``. Its hyperparameters are plain data (the config as builtins, class
names, mean/std) so a checkpoint loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

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


class ClassificationModule(L.LightningModule):
    """Trains ``net`` (logits ``[batch, num_classes]``) on normalised images."""

    def __init__(
        self,
        net: nn.Module | None = None,
        *,
        num_classes: int,
        class_names: list[str],
        config: dict[str, Any],
        mean: list[float],
        std: list[float],
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        if net is None:
            raise ValueError("ClassificationModule needs the network built by the architecture registry")
        self.net = net
        channels = len(mean)
        # Non-persistent: the state_dict holds exactly the network (``net.*``) and nothing to re-derive.
        self.register_buffer("mean", torch.tensor(mean).view(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, channels, 1, 1), persistent=False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weight", weights, persistent=False)
        loss = config["training"]["loss"]
        self.label_smoothing = float(loss.get("label_smoothing", 0.0))
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_f1 = MulticlassF1Score(num_classes, average="macro", validate_args=False)
        self._train_loss_sum: torch.Tensor | None = None
        self._train_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        if images.dtype == torch.uint8:
            images = images.float().div_(255.0).sub_(self.mean).div_(self.std)
        return images, labels

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, weight=self.class_weight, label_smoothing=self.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.net(images)
        loss = self._loss(logits, labels)
        self.train_acc.update(logits.detach().argmax(dim=1), labels)
        # Summed here and logged once per epoch: Lightning's per-step ``self.log`` costs ~2 % of a small model's step.
        weighted = loss.detach() * labels.shape[0]
        self._train_loss_sum = weighted if self._train_loss_sum is None else self._train_loss_sum.add_(weighted)
        self._train_seen += int(labels.shape[0])
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_loss_sum, self._train_seen = None, 0
        self.train_acc.reset()

    def on_train_epoch_end(self) -> None:
        """``train/loss`` (mean over every rank's images) and ``train/acc`` of the epoch, for the epoch's record."""
        loss_sum = self._train_loss_sum if self._train_loss_sum is not None else torch.zeros((), device=self.device)
        totals = torch.stack([loss_sum.float(), torch.tensor(float(self._train_seen), device=loss_sum.device)])
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        if float(totals[1]) > 0:
            self.log("train/loss", totals[0] / totals[1])
            self.log("train/acc", self.train_acc.compute())  # torchmetrics syncs the ranks itself
        self.train_acc.reset()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.net(images)
        loss = self._loss(logits, labels)
        preds = logits.argmax(dim=1)
        self.val_acc.update(preds, labels)
        self.val_f1.update(preds, labels)
        self.log("val/loss", loss, on_step=False, on_epoch=True, batch_size=labels.shape[0], sync_dist=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True)
        self.log("val/f1", self.val_f1, on_step=False, on_epoch=True)

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
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, int(self.trainer.max_epochs or 1)))
        lambda_lr = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(scheduler, total, per_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": lambda_lr, "interval": "step", "frequency": 1}}
