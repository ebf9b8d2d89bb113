"""The small detector trains usefully on a CPU (issue 14): ``simple_detector`` on ``shapes-detection`` in a plain loop.

Generates the default ``shapes-detection`` sample set (1000 canvases of 96 px,
seed 0) in a temp folder, holds out a seeded 20 % as test images, and trains
``simple_detector`` with a hand-written PyTorch loop: AdamW, batch 32, a
one-cycle learning-rate schedule, random horizontal flips, 2 torch threads.
Then it reports COCO mAP on the held-out images with torchmetrics'
``MeanAveragePrecision(backend="faster_coco_eval")``. Target: mAP@.5 >= 0.8
after under 3 minutes of training on a 2-core CPU.

Measured on the shared 2-core CI box (12 epochs, 9600 training images seen):
mAP@.5 0.991, mAP@[.5:.95] 0.81, mAP@.75 0.96 after 50 s of training with two
threads (64 process CPU-seconds, load average ~4 from other work); one thread:
87 s wall, 62 CPU-seconds. Run as a script, it sets ``OMP_WAIT_POLICY=PASSIVE``
unless the environment says otherwise: with OpenMP's default spinning, two
threads on that busy box stalled to 229-559 s for the same run (the stall
described in benchmarks/README.md). The report records the policy and the
process CPU seconds.

It is also the plain side the ``train_overhead_detection`` row
(``benchmarks/train_bench.py``) compares the run engine with:
``load_detection_set`` and ``train_plain`` take the data, the
hyper-parameters and the epoch clock as arguments.

Run ``python -m benchmarks.detection_plain [--epochs N] [--images N] [--out PATH]``;
it prints the numbers and writes ``benchmarks/results/detection_plain.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import machine_info

TARGET_MAP_50 = 0.8
TARGET_SECONDS = 180.0
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class DetectionSet:
    """Decoded images (``uint8 [N, 3, H, W]``), per-image xyxy boxes and 0-based labels, and the class names."""

    images: Any
    boxes: list[Any]
    labels: list[Any]
    classes: list[str]

    def subset(self, index: list[int]) -> DetectionSet:
        return DetectionSet(self.images[index], [self.boxes[i] for i in index], [self.labels[i] for i in index],
                            self.classes)


def load_detection_set(folder: Path) -> DetectionSet:
    """Read a COCO folder written by ``generate_shapes_detection`` (``annotations.json`` beside the images)."""
    import numpy as np
    import torch
    from PIL import Image

    coco = json.loads((folder / "annotations.json").read_text(encoding="utf-8"))
    category_index = {c["id"]: i for i, c in enumerate(coco["categories"])}
    per_image: dict[int, list[dict[str, Any]]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    pixels, boxes, labels = [], [], []
    for im in coco["images"]:
        with Image.open(folder / im["file_name"]) as img:
            pixels.append(np.asarray(img.convert("RGB")).transpose(2, 0, 1))
        anns = per_image[im["id"]]
        boxes.append(torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
                                  dtype=torch.float32).reshape(-1, 4))
        labels.append(torch.tensor([category_index[a["category_id"]] for a in anns], dtype=torch.int64))
    return DetectionSet(torch.from_numpy(np.stack(pixels)), boxes, labels, [c["name"] for c in coco["categories"]])


def _normalise(images: Any) -> Any:
    import torch

    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return images.float().div_(255.0).sub_(mean).div_(std)


def train_plain(train: DetectionSet, epochs: int = 12, batch: int = 32, lr: float = 4e-3, weight_decay: float = 1e-4,
                seed: int = 0, flip: bool = True,
                clock: Callable[[], float] = time.perf_counter) -> tuple[Any, dict[str, Any]]:
    """Train a fresh ``simple_detector`` on ``train``; returns the model (eval mode) and timing/loss figures.

    ``epoch_seconds`` times each epoch's loop (shuffle to the last optimizer
    step) with ``clock``: the ``train_overhead_detection`` row passes
    ``time.process_time`` for process CPU seconds, as the run engine's epoch
    records are then timed.
    """
    import torch

    from modelyard.plugins.simple_detector import build_simple_detector

    torch.manual_seed(seed)
    size = tuple(train.images.shape[2:])
    model = build_simple_detector(len(train.classes), image_size=size)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(train.images) + batch - 1) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                   pct_start=0.15)
    width = size[1]
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    epoch_seconds: list[float] = []
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        epoch_start = clock()
        order = torch.randperm(len(train.images), generator=generator).tolist()
        epoch_loss = 0.0
        for begin in range(0, len(order), batch):
            index = order[begin:begin + batch]
            x = _normalise(train.images[index])
            targets = []
            flips = torch.rand(len(index), generator=generator) < 0.5 if flip else torch.zeros(len(index), dtype=torch.bool)
            for row, (i, flipped) in enumerate(zip(index, flips.tolist(), strict=True)):
                boxes = train.boxes[i]
                if flipped:
                    x[row] = x[row].flip(-1)
                    boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
                targets.append({"boxes": boxes, "labels": train.labels[i]})
            loss = sum(model(x, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            epoch_loss += float(loss.detach()) * len(index)
        epoch_seconds.append(clock() - epoch_start)
        losses.append(epoch_loss / len(order))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    model.eval()
    # process CPU seconds (all threads): what other load on the machine barely moves
    return model, {"train_seconds": seconds, "train_cpu_seconds": cpu_seconds, "epochs": epochs, "batch": batch, "lr": lr,
                   "train_images_per_s": epochs * len(train.images) / seconds, "epoch_losses": losses,
                   "epoch_seconds": epoch_seconds}


def evaluate_map(model: Any, test: DetectionSet, batch: int = 64) -> dict[str, float]:
    """COCO mAP@[.5:.95], mAP@.5 and mAP@.75 of ``model`` on ``test`` (faster_coco_eval backend)."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval",
                                  iou_thresholds=[0.5 + 0.05 * i for i in range(10)])
    model.eval()
    with torch.no_grad():
        for begin in range(0, len(test.images), batch):
            outputs = model(_normalise(test.images[begin:begin + batch]))
            truth = [{"boxes": test.boxes[i], "labels": test.labels[i]}
                     for i in range(begin, min(begin + batch, len(test.images)))]
            metric.update(outputs, truth)
    result = metric.compute()
    return {"map": float(result["map"]), "map_50": float(result["map_50"]), "map_75": float(result["map_75"])}


def run(num_images: int = 1000, size: int = 96, epochs: int = 12, batch: int = 32, threads: int = 2,
        test_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Generate, split, train and evaluate; returns every figure (see the module docstring)."""
    import torch

    from modelyard.core.sample_data import generate_shapes_detection

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="detection-plain-") as tmp:
            started = time.perf_counter()
            generate_shapes_detection(Path(tmp), num_images=num_images, size=size, seed=seed)
            data = load_detection_set(Path(tmp))
            generate_seconds = time.perf_counter() - started
        order = list(range(num_images))
        random.Random(seed).shuffle(order)
        n_test = round(num_images * test_fraction)
        test, train = data.subset(sorted(order[:n_test])), data.subset(sorted(order[n_test:]))
        model, figures = train_plain(train, epochs=epochs, batch=batch, seed=seed)
        started = time.perf_counter()
        scores = evaluate_map(model, test)
        eval_seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous)
    return {
        "architecture": "simple_detector", "parameters": sum(p.numel() for p in model.parameters()),
        "num_images": num_images, "num_train": len(train.images), "num_test": len(test.images), "size": size,
        "threads": threads, "generate_seconds": generate_seconds, "eval_seconds": eval_seconds, **figures, **scores,
        "target": {"map_50": TARGET_MAP_50, "train_seconds": TARGET_SECONDS},
        "met": scores["map_50"] >= TARGET_MAP_50 and figures["train_seconds"] < TARGET_SECONDS,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="canvases generated (20 %% held out for the test)")
    parser.add_argument("--size", type=int, default=96, help="canvas side in pixels")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "detection_plain.json")
    args = parser.parse_args(argv)
    result = run(args.images, args.size, args.epochs, args.batch, args.threads)
    report = {"result": result, "machine": machine_info(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"simple_detector ({result['parameters']} parameters), {result['num_train']} train / {result['num_test']} "
          f"test images of {result['size']} px, {result['epochs']} epochs, {result['threads']} threads")
    print(f"train {result['train_seconds']:.1f} s ({result['train_images_per_s']:.0f} img/s), "
          f"mAP@.5 {result['map_50']:.3f}, mAP@[.5:.95] {result['map']:.3f}, mAP@.75 {result['map_75']:.3f} "
          f"-> target (mAP@.5 >= {TARGET_MAP_50} in < {TARGET_SECONDS:.0f} s) {'met' if result['met'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    # before torch loads OpenMP: waiting threads sleep instead of spinning, so a busy machine does not stall them
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    raise SystemExit(main())
