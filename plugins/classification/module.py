"""The classification training module: cross-entropy on ``(batch, num_classes)`` logits.

Label smoothing and class weights come from the config; it logs
``train/loss``, ``train/acc``, ``val/loss``, ``val/acc`` and ``val/f1`` (one
torchmetrics object per validation metric, synced over the ranks by
torchmetrics itself).

The training engine hands it the registered loss the config names
(``use_loss``; without one, cross-entropy) and the registered metrics it adds
(``use_metrics``, logged as ``val/<name>``). Neither becomes a sub-module, so
checkpoints hold the network only and load without them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from modelyard.core import TaskModule


class ClassificationModule(TaskModule):
    """Trains ``net`` (logits ``[batch, num_classes]``); a label of ``-1`` (DDP padding) counts in no metric."""

    TASK = "classification"

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
        super().__init__(net, num_classes=num_classes, class_names=class_names, config=config, mean=mean, std=std,
                         class_weights=class_weights)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weight", weights, persistent=False)
        loss = config["training"]["loss"]
        self.label_smoothing = float(loss.get("label_smoothing", 0.0))
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_f1 = MulticlassF1Score(num_classes, average="macro", validate_args=False)
        #: this validation's sums on this rank: [weighted loss, weight]
        self._val_sums: torch.Tensor | None = None
        #: the registered loss and metrics the engine handed over (a plain dict: no sub-modules, no checkpoint keys)
        self._registered: dict[str, Any] = {"loss": None, "metrics": {}}

    # -- registered losses and metrics (hook API 0.3) ------------------------------------
    def use_loss(self, criterion: Any) -> None:
        """Train with ``criterion(logits, labels) -> scalar`` (a registered loss) instead of the built-in cross-entropy.

        ``val/loss`` is the mean over every validation image: a torch
        ``CrossEntropyLoss`` is evaluated per image with its weights (exactly as the
        built-in one); any other loss counts each batch's value once per image.
        """
        self._registered["loss"] = criterion

    def use_metrics(self, metrics: dict[str, Any]) -> None:
        """Also update these torchmetrics objects on every validation batch and log each as ``val/<name>``."""
        self._registered["metrics"] = dict(metrics)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for extra in (self._registered["loss"], *self._registered["metrics"].values()):
            if isinstance(extra, nn.Module):
                extra.to(self.device)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def evaluate_batch(self, images: torch.Tensor, targets: torch.Tensor) -> list[tuple[Any, float]]:
        """Per image: the softmax probabilities (float32 numpy) and the plain cross-entropy on its label."""
        logits = self.net(images).float()
        probabilities = torch.softmax(logits, dim=1).cpu()
        losses = F.cross_entropy(logits, targets.clamp(min=0), reduction="none").cpu()  # padding (-1) is dropped later
        return [(row.numpy(), float(loss)) for row, loss in zip(probabilities, losses, strict=True)]

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        criterion = self._registered["loss"]
        if criterion is not None:
            return criterion(logits, labels)
        return F.cross_entropy(logits, labels, weight=self.class_weight, label_smoothing=self.label_smoothing)

    def _val_loss_sums(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``[sum of per-image losses x weight, sum of weights]`` of one validation batch."""
        criterion = self._registered["loss"]
        weight, smoothing = self.class_weight, self.label_smoothing
        if isinstance(criterion, nn.CrossEntropyLoss):
            weight, smoothing = criterion.weight, criterion.label_smoothing
        elif criterion is not None:  # any other loss: its batch value, once per image
            count = float(labels.shape[0])
            value = criterion(logits, labels).float() * count if count else torch.zeros((), device=logits.device)
            return torch.stack([value, torch.tensor(count, device=logits.device)])
        per_image = F.cross_entropy(logits, labels, weight=weight, label_smoothing=smoothing, reduction="none")
        image_weight = weight[labels] if weight is not None else torch.ones_like(per_image)
        return torch.stack([per_image.float().sum(), image_weight.float().sum()])

    # -- training ----------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.net(images)
        loss = self._loss(logits, labels)
        # Summed here and logged once per epoch: Lightning's per-step ``self.log`` costs ~2 % of a small model's step.
        with torch.no_grad():
            self.accumulate_train(torch.stack([loss.detach().float() * labels.shape[0],
                                               (logits.detach().argmax(dim=1) == labels).sum().float()]),
                                  int(labels.shape[0]))
        return loss

    def log_train_epoch(self, sums: torch.Tensor, images: float) -> None:
        """``train/loss`` and ``train/acc`` over every rank's images of the epoch."""
        self.log("train/loss", sums[0] / images)
        self.log("train/acc", sums[1] / images)

    # -- validation ------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self.net(images)
        keep = labels >= 0  # padding items of a DDP shard count nowhere
        logits, labels = logits[keep], labels[keep]
        step = self._val_loss_sums(logits, labels)
        self._val_sums = step if self._val_sums is None else self._val_sums.add_(step)
        if labels.numel():  # torchmetrics cannot take an empty batch (a shard's padding only)
            preds = logits.argmax(dim=1)
            self.val_acc.update(preds, labels)
            self.val_f1.update(preds, labels)
            for metric in self._registered["metrics"].values():
                metric.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        """``val/loss`` (weighted mean over every image of every rank), ``val/acc`` and ``val/f1``."""
        sums = self.sum_over_ranks(self._val_sums if self._val_sums is not None else torch.zeros(2, device=self.device))
        if float(sums[1]) > 0:
            self.log("val/loss", sums[0] / sums[1])
        self.log("val/acc", self.val_acc.compute())  # torchmetrics syncs the ranks itself
        self.log("val/f1", self.val_f1.compute())
        self.val_acc.reset()
        self.val_f1.reset()
        for name, metric in self._registered["metrics"].items():
            self.log(f"val/{name}", metric.compute())
            metric.reset()
