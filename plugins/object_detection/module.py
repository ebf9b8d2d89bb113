"""The detection training module: the detector's own losses, and mAP on the validation images.

The network follows ``DetectionNet`` (core/plugin_types.py): in training mode
it returns its named losses, summed here; in eval mode its detections.
``val/map`` (IoU .5:.95) and ``val/map_50`` come from torchmetrics'
``MeanAveragePrecision`` on the ``faster_coco_eval`` backend (a maintained,
compiled re-implementation of the COCO evaluation: the same numbers as
pycocotools, several times faster, and torchmetrics' recommended backend).
``val/loss`` is the training loss on the validation images, computed with
normalisation and dropout layers in eval mode so validation changes no
running statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from modelyard.core import TaskModule

_FROZEN_IN_VALIDATION = (nn.modules.batchnorm._NormBase, nn.Dropout, nn.GroupNorm, nn.LayerNorm)


def mean_average_precision() -> MeanAveragePrecision:
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")


def training_losses(net: nn.Module, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """The detector's summed training losses, without updating normalisation statistics (validation)."""
    was_training = net.training
    net.train()
    for module in net.modules():
        if isinstance(module, _FROZEN_IN_VALIDATION):
            module.eval()
    try:
        losses = net(images, targets)
    finally:
        net.train(was_training)
    return torch.stack([value.float() for value in losses.values()]).sum()


def _plain(targets: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


class DetectionModule(TaskModule):
    """Trains a ``DetectionNet``; logs ``train/loss``, ``val/loss``, ``val/map`` and ``val/map_50``."""

    TASK = "object_detection"

    def __init__(self, net: nn.Module | None = None, **hparams: Any) -> None:
        super().__init__(net, **hparams)
        self.val_map = mean_average_precision()
        self._val_sums: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> Any:
        return self.net(images)

    def evaluate_batch(self, images: torch.Tensor, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per image: every detection (boxes xyxy in input pixels, scores, labels) as numpy arrays."""
        return [{"boxes": d["boxes"].float().cpu().numpy(), "scores": d["scores"].float().cpu().numpy(),
                 "labels": d["labels"].long().cpu().numpy()} for d in self.net(images)]

    def training_step(self, batch: tuple[torch.Tensor, list[dict[str, Any]]], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.net(images, _plain(targets))
        loss = torch.stack([value.float() for value in losses.values()]).sum()
        self.accumulate_train(loss.detach()[None] * images.shape[0], int(images.shape[0]))
        return loss

    def log_train_epoch(self, sums: torch.Tensor, images: float) -> None:
        self.log("train/loss", sums[0] / images)

    def on_validation_epoch_start(self) -> None:
        self._val_sums = None

    def validation_step(self, batch: tuple[torch.Tensor, list[dict[str, Any]]], batch_idx: int) -> None:
        images, targets = batch
        keep = [i for i, target in enumerate(targets) if not target.get("ignore")]  # DDP padding counts nowhere
        if not keep:
            return
        images, targets = images[keep], _plain([targets[i] for i in keep])
        loss = training_losses(self.net, images, targets)
        step = torch.stack([loss.detach() * len(keep), torch.tensor(float(len(keep)), device=loss.device)])
        self._val_sums = step if self._val_sums is None else self._val_sums.add_(step)
        detections = self.net(images)
        self.val_map.update([{k: d[k].float() if k != "labels" else d[k] for k in ("boxes", "scores", "labels")}
                             for d in detections], targets)

    def on_validation_epoch_end(self) -> None:
        """``val/loss`` over every rank's images, ``val/map`` and ``val/map_50`` (torchmetrics syncs the ranks)."""
        sums = self.sum_over_ranks(self._val_sums if self._val_sums is not None else torch.zeros(2, device=self.device))
        if float(sums[1]) > 0:
            self.log("val/loss", sums[0] / sums[1])
        result = self.val_map.compute()
        self.log("val/map", result["map"].float())
        self.log("val/map_50", result["map_50"].float())
        self.val_map.reset()
