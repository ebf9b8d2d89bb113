"""Is data loading ever the bottleneck? Training on real JPEGs against training on a free, synthetic tensor.

Both sides train the same freshly built network (same registry, seed,
optimizer, batch size, image size, epochs) with the same plain training step
(uint8 batch -> float, normalise, forward, cross-entropy, backward, AdamW
step). Only where the batches come from differs:

* *ours*: the engine's real ``ImageDataModule`` over photo-sized JPEGs
  (500x375). Its ``setup`` (decoding every image once into the decoded-image
  cache, the ``cache: auto`` default) is inside the timed region, so the cost
  of reading real files is paid in full, once per run, as in a real run;
* *against*: a synthetic ``uint8`` tensor of the same shape already in memory,
  batched by ``index_select`` of a random permutation.

Throughput is training images per second over the whole run. Target: ours >= 0.9x.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import Result, Side, interleave
from benchmarks.loader_bench import BATCH, IMAGE_PX, loader_config
from benchmarks.photos import PhotoProject

ARCHITECTURE = "resnet18"


def _train(model: torch.nn.Module, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]], epochs: int,
           mean: torch.Tensor, std: torch.Tensor) -> int:
    """The shared training loop; returns how many images it trained on."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    seen = 0
    for _ in range(epochs):
        for images, labels in batches():
            x = images.float().div_(255.0).sub_(mean).div_(std)
            loss = F.cross_entropy(model(x), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += int(labels.shape[0])
    return seen


def bench_real_vs_synthetic(project: PhotoProject, epochs: int, repeats: int) -> Result:
    """Training images/s on the project's JPEGs through the engine's data pipeline vs on a synthetic tensor."""
    from modelyard.core.models import build_model
    from modelyard.core.training.worker.data import ImageDataModule, normalization

    config = loader_config(cache="auto", max_epochs=epochs)
    num_classes = len(project.dataset["classes"])
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization(3))
    architectures = project.services.plugins.architectures
    probe = ImageDataModule(project.images_dir, project.dataset, config)
    n_train = len(probe.train_items)
    generator = torch.Generator().manual_seed(0)
    synthetic = torch.randint(0, 256, (n_train, 3, IMAGE_PX, IMAGE_PX), dtype=torch.uint8, generator=generator)
    synthetic_labels = torch.randint(0, num_classes, (n_train,), generator=generator)
    cache_used: list[bool] = []

    def fresh_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model(architectures, ARCHITECTURE, num_classes, image_size=(IMAGE_PX, IMAGE_PX))

    def ours() -> float:
        model = fresh_model()
        start = time.perf_counter()
        datamodule = ImageDataModule(project.images_dir, project.dataset, config)
        datamodule.setup("fit")  # decodes the JPEGs (into the cache when they fit): part of the cost
        loader = datamodule.train_dataloader()
        seen = _train(model, lambda: loader, epochs, mean, std)
        cache_used.append(datamodule.cache_used)
        return seen / (time.perf_counter() - start)

    def synthetic_side() -> float:
        model = fresh_model()
        start = time.perf_counter()

        def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
            order = torch.randperm(n_train)
            for begin in range(0, n_train, BATCH):
                index = order[begin:begin + BATCH]
                yield synthetic.index_select(0, index), synthetic_labels.index_select(0, index)

        seen = _train(model, batches, epochs, mean, std)
        return seen / (time.perf_counter() - start)

    ours_values, synthetic_values = interleave(ours, synthetic_side, repeats)
    extra: dict[str, Any] = {"architecture": ARCHITECTURE, "image_px": IMAGE_PX, "batch": BATCH, "epochs": epochs,
                             "train_images": n_train, "data_cache_used": all(cache_used)}
    return Result(
        id="train_real_vs_synthetic",
        compares=(f"{ARCHITECTURE} {IMAGE_PX}px batch {BATCH}, {epochs} epochs over {n_train} images, same plain training "
                  "step: batches from the engine's ImageDataModule over 500x375 JPEGs (setup/decoding timed) vs from a "
                  "synthetic uint8 tensor in memory; training images/s of the whole run"),
        ours=Side("real JPEGs, engine pipeline", "img/s", ours_values),
        against=Side("synthetic in-memory tensor", "img/s", synthetic_values),
        ratio_kind="ours/against", target=">= 0.9x", target_value=0.9, higher_is_better=True, extra=extra,
    )
