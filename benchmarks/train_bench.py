"""Training engine overhead (issue 5): our run engine against a hand-written PyTorch loop.

Both sides train the same architecture (built by the same registry, same
seed) on the same decoded ``uint8`` images with the same batch size and
optimizer (AdamW), normalising on the device. *Ours* is the real run engine
(``train_run`` on a run folder: Lightning, the DataModule with its memory
cache, metrics, checkpoints, events, heartbeat, validation on a small val
subset); *against* is a plain ``for batch in ...: forward, backward, step``.
Throughput is train images per second of the training loop over the epochs
after the first (warm-up); the engine's whole epochs (with validation and
checkpoint writes) are reported beside it. The two sides run interleaved
(A B A B ...) in one process; ``paired_ratios`` compares each engine run with
the plain run next to it, which is what to read on a machine shared with other
load. Target: ours >= 0.95x.

``bench_train_overhead_detection`` (row ``train_overhead_detection``, issue
14) does the same for object detection: the engine trains ``simple_detector``
in a real ``object_detection`` project whose generated shapes-detection
canvases were imported as COCO through the dataset service; the plain side is
``detection_plain.train_plain`` on the run's training images (decoded from
the same files, NCHW like the engine's cache). Both sides: batch 32, AdamW
with a one-cycle schedule, a random horizontal flip (p 0.5; the engine's goes
through the task runtime's per-image, seeded ``augment``), training-loop
images per second over the epochs after the first. The engine runs with
``num_workers: 0`` so both sides augment in the timed process.

Run ``python -m benchmarks.train_bench [--quick] [--clock cpu]``; it writes
``benchmarks/results/train_bench.json`` (``train_bench_cpu.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Result, Side, format_table, interleave, write_report

TARGET_RATIO = 0.95
VAL_FRACTION = 0.06


def _project(root: Path, arch_px: int, n_images: int) -> tuple[Any, str]:
    """A workspace with one project whose dataset is ``n_images`` generated shapes, split ~94/6 train/val."""
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.sample_data import SHAPES, generate_shapes
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    source = root / "source"
    generate_shapes(source, per_class=n_images // len(SHAPES), size=arch_px, seed=0)
    services = build_services(Settings(workspace=root / "workspace", import_roots=[source]))
    project_id = services.projects.create("bench").id
    services.datasets.import_local(project_id, str(source), format="imagefolder")
    services.splits.create(project_id, "bench", Ratios(train=1.0 - VAL_FRACTION, val=VAL_FRACTION), seed=0)
    return services, project_id


def _engine_side(services: Any, project_id: str, config: dict[str, Any],
                 clock: Callable[[], float] = time.perf_counter) -> tuple[Any, Any, list[float]]:
    """``run()`` trains one fresh run with the real engine and returns its training images/s.

    Also returns the frozen config and a list that collects each run's whole-epoch
    images/s (training plus validation and checkpoint writes).
    """
    from modelyard.core.jsonio import read_json
    from modelyard.core.training.worker.engine import train_run
    from modelyard.core.training.run_folder import create_run_folder

    experiment = services.experiments.create(project_id, "engine", config=config)
    frozen = services.experiments.run_config(project_id, experiment["id"])
    whole_epochs: list[float] = []

    def run() -> float:
        run_dir = create_run_folder(services.workspace, project_id, experiment["id"], frozen)
        status = train_run(services.workspace, run_dir, plugins=services.plugins, clock=clock)
        if status != "completed":
            raise RuntimeError(f"engine run {run_dir.name} ended {status}: {read_json(run_dir / 'run.json')['error']}")
        records = read_json(run_dir / "metrics.json")[1:]  # the first epoch is warm-up
        n_train = read_json(run_dir / "reproducibility.json")["num_train_images"]
        shutil.rmtree(run_dir)
        whole_epochs.append(n_train * len(records) / sum(r["time_s"] for r in records))
        # training loop only, as the plain loop measures it (epoch records carry that throughput)
        return n_train * len(records) / sum(n_train / r["images_per_s"] for r in records)

    return run, frozen, whole_epochs


def _plain_side(services: Any, project_id: str, frozen: Any, epochs: int,
                clock: Callable[[], float] = time.perf_counter) -> Any:
    """``run()`` trains the same model on the same images with a hand-written loop; returns train images/s."""
    import torch
    import torch.nn.functional as F

    from modelyard.core.jsonio import read_json
    from modelyard.core.models import build_model
    from modelyard.core.training.worker.data import decode_all, normalization, split_items

    dataset = read_json(services.workspace.dataset_json(project_id))
    items = split_items(dataset, frozen.split_index, "train")
    images = decode_all([services.workspace.images_dir(project_id) / name for name, _ in items],
                        frozen.data.image_size, frozen.data.channels)
    labels = torch.tensor([label for _, label in items])
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in normalization(frozen.data.channels))
    batch, lr = frozen.data.batch_size, frozen.training.optimizer.lr

    def run() -> float:
        torch.manual_seed(frozen.training.seed)
        model = build_model(services.plugins.architectures, frozen.model.architecture, len(dataset["classes"]),
                            image_size=tuple(frozen.data.image_size))
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=frozen.training.optimizer.weight_decay)
        times = []
        for _ in range(epochs):
            start = clock()
            order = torch.randperm(len(labels))
            for begin in range(0, len(order), batch):
                index = order[begin:begin + batch]
                x = images.index_select(0, index).float().div_(255.0).sub_(mean).div_(std)
                loss = F.cross_entropy(model(x), labels.index_select(0, index))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            times.append(clock() - start)
        return len(labels) * (epochs - 1) / sum(times[1:])

    return run


def _compare(build: Callable[[Path, Callable[[], float]], tuple[Any, Any, list[float]]], repeats: int, clock: str,
             threads: int | None) -> dict[str, Any]:
    """Set the threads and the clock, build both sides in a temp folder, run them interleaved; the figures.

    ``build(folder, timer)`` returns ``(engine_run, plain_run, whole_epochs)``
    (see ``_engine_side``); the engine's ``hardware.cpu_threads`` is read from
    ``torch.get_num_threads()`` inside it, after the threads are set here.
    """
    import statistics

    import torch

    previous_threads = torch.get_num_threads()
    if threads is not None or clock == "cpu":
        torch.set_num_threads(threads or 1)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    try:
        with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
            engine, plain, whole_epochs = build(Path(tmp), timer)
            ours, against = interleave(engine, plain, repeats)
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "clock": clock, "torch_threads": threads or (1 if clock == "cpu" else previous_threads),
        "engine_values": ours, "plain_values": against,
        "ratio": statistics.median(ours) / statistics.median(against),
        # each round's engine run against the plain run next to it (same load conditions): the noise-robust view
        "paired_ratios": [a / b for a, b in zip(ours, against, strict=True)],
        "paired_ratio_median": statistics.median(a / b for a, b in zip(ours, against, strict=True)),
        # the engine's whole epochs (training + validation on ~6 % of the images + two checkpoint writes)
        "engine_whole_epoch_values": whole_epochs,
        "whole_epoch_ratio": statistics.median(whole_epochs) / statistics.median(against),
    }


def _engine_threads() -> int:
    import torch

    return torch.get_num_threads()


def bench_train_overhead(arch: str, image_px: int, batch: int = 64, n_images: int = 1024, epochs: int = 3,
                         repeats: int = 3, clock: str = "wall", threads: int | None = None) -> dict[str, Any]:
    """Train images/s of the run engine and of a hand-written loop, interleaved; ``ratio`` = ours / plain.

    ``clock="cpu"`` counts process CPU seconds instead of wall seconds (with one
    intra-op thread unless ``threads`` says otherwise, so idle OpenMP threads do
    not spin): images per CPU-second, which other load on the machine barely moves.
    """

    def build(folder: Path, timer: Callable[[], float]) -> tuple[Any, Any, list[float]]:
        config = {
            "model": {"architecture": arch},
            "data": {"image_size": [image_px, image_px], "batch_size": batch, "cache": "memory", "num_workers": "auto"},
            "training": {"max_epochs": epochs, "early_stopping": None, "precision": "32"},
            # the engine pins its threads (hardware.cpu_threads, default 1): give it the plain loop's count
            "hardware": {"devices": ["cpu"], "cpu_threads": _engine_threads()},
        }
        services, project_id = _project(folder, image_px, n_images)
        engine, frozen, whole_epochs = _engine_side(services, project_id, config, timer)
        return engine, _plain_side(services, project_id, frozen, epochs, timer), whole_epochs

    return {"arch": arch, "image_px": image_px, "batch": batch, "n_images": n_images, "epochs": epochs,
            **_compare(build, repeats, clock, threads)}


# -- object detection (issue 14) ------------------------------------------------------------------------


def _detection_project(root: Path, image_px: int, n_images: int) -> tuple[Any, str, Path]:
    """An ``object_detection`` project of ``n_images`` generated shapes-detection canvases, COCO-imported, ~94/6 split.

    Also returns the generated COCO folder (the plain loop reads it with ``load_detection_set``).
    """
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.sample_data import generate_shapes_detection
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    source = root / "source"
    generate_shapes_detection(source, num_images=n_images, size=image_px, seed=0)
    services = build_services(Settings(workspace=root / "workspace", import_roots=[source]))
    project_id = services.projects.create("bench-detection", task="object_detection").id
    services.datasets.import_local(project_id, str(source), format="coco")
    services.splits.create(project_id, "bench", Ratios(train=1.0 - VAL_FRACTION, val=VAL_FRACTION), seed=0)
    return services, project_id, source


def _detection_plain_side(services: Any, project_id: str, source: Path, frozen: Any, flip: bool,
                          clock: Callable[[], float]) -> Any:
    """``run()`` trains ``simple_detector`` on the engine's training images with ``detection_plain.train_plain``.

    The images are the run's train subset (same file names, decoded from the
    generated COCO folder once, outside the timing); batch, epochs, AdamW, lr,
    weight decay, one-cycle schedule, seed and the horizontal flip are the run
    config's. Returns train images/s over the epochs after the first.
    """
    from benchmarks.detection_plain import DetectionSet, load_detection_set, train_plain
    from modelyard.core.jsonio import read_json

    dataset = read_json(services.workspace.dataset_json(project_id))
    train_names = {image["filename"] for image in dataset["images"]
                   if image["split"][frozen.split_index] == "train"}
    everything = load_detection_set(source)
    coco = read_json(source / "annotations.json")
    train = everything.subset([i for i, image in enumerate(coco["images"]) if image["file_name"] in train_names])
    # NCHW-contiguous, as the engine's decoded cache is: load_detection_set's tensor is a view of HWC arrays
    # (channels_last strides), with which simple_detector's convolutions run ~35 % faster on a CPU
    train = DetectionSet(train.images.contiguous(), train.boxes, train.labels, train.classes)
    if len(train.images) != len(train_names) or tuple(train.images.shape[2:]) != tuple(frozen.data.image_size):
        raise RuntimeError("the plain loop's images are not the run's training images")
    training = frozen.training
    epochs = training.max_epochs

    def run() -> float:
        _, figures = train_plain(train, epochs=epochs, batch=frozen.data.batch_size, lr=training.optimizer.lr,
                                 weight_decay=training.optimizer.weight_decay, seed=training.seed, flip=flip,
                                 clock=clock)
        return len(train.images) * (epochs - 1) / sum(figures["epoch_seconds"][1:])

    return run


def bench_train_overhead_detection(image_px: int = 96, batch: int = 32, n_images: int = 512, epochs: int = 3,
                                   repeats: int = 3, clock: str = "wall", threads: int | None = None,
                                   flip: bool = True) -> dict[str, Any]:
    """Train images/s of the run engine and of ``detection_plain.train_plain`` on the same detector and data.

    Both sides: ``simple_detector`` at ``image_px``, the same decoded canvases,
    batch ``batch``, AdamW (lr 4e-3, wd 1e-4) with a one-cycle schedule, and a
    random horizontal flip with p 0.5 (``flip``; none on either side when
    false). The engine gets ``num_workers: 0``: the plain loop flips in its own
    process, and loader worker processes would escape a process-CPU clock.
    ``clock``/``threads`` as for ``bench_train_overhead``.
    """

    def build(folder: Path, timer: Callable[[], float]) -> tuple[Any, Any, list[float]]:
        augment = [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}] if flip else []
        config = {
            "model": {"architecture": "simple_detector"},
            "data": {"image_size": [image_px, image_px], "batch_size": batch, "cache": "memory", "num_workers": 0,
                     "augmentations": {"train": augment, "val": []}},
            "training": {"max_epochs": epochs, "early_stopping": None, "precision": "32",
                         "optimizer": {"name": "adamw", "lr": 4e-3, "weight_decay": 1e-4},
                         "scheduler": {"name": "onecycle"}},
            "hardware": {"devices": ["cpu"], "cpu_threads": _engine_threads()},
        }
        services, project_id, source = _detection_project(folder, image_px, n_images)
        engine, frozen, whole_epochs = _engine_side(services, project_id, config, timer)
        return engine, _detection_plain_side(services, project_id, source, frozen, flip, timer), whole_epochs

    return {"arch": "simple_detector", "image_px": image_px, "batch": batch, "n_images": n_images, "epochs": epochs,
            "flip": flip, **_compare(build, repeats, clock, threads)}


def _result(row_id: str, what: str, r: dict[str, Any], unit: str) -> Result:
    return Result(
        id=row_id, compares=f"run engine vs hand-written loop, {what} batch {r['batch']}",
        ours=Side("run engine", unit, r["engine_values"]), against=Side("plain loop", unit, r["plain_values"]),
        ratio_kind="ours/against", target=f">= {TARGET_RATIO}x", target_value=TARGET_RATIO, higher_is_better=True,
        extra={k: v for k, v in r.items() if k not in ("engine_values", "plain_values")},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (smoke run)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall seconds (real images/s) or process CPU seconds (robust on a busy machine)")
    parser.add_argument("--out", type=Path, default=None,
                        help="report path [default: benchmarks/results/train_bench.json, train_bench_cpu.json for --clock cpu]")
    args = parser.parse_args(argv)
    out = args.out or Path(__file__).parent / "results" / ("train_bench_cpu.json" if args.clock == "cpu" else "train_bench.json")
    cases = [("simple_cnn", 28, 1024), ("resnet18", 64, 512)]
    results: list[Result] = []
    unit = "img/cpu-s" if args.clock == "cpu" else "img/s"
    for arch, px, n_images in cases:
        r = bench_train_overhead(arch, px, n_images=n_images // (2 if args.quick else 1), repeats=2 if args.quick else 5,
                                 clock=args.clock)
        results.append(_result(f"train_engine_{arch}_{px}px", f"{arch} {px}px", r, unit))
    r = bench_train_overhead_detection(n_images=128 if args.quick else 512, repeats=2 if args.quick else 5, clock=args.clock)
    results.append(_result("train_engine_simple_detector_96px", "simple_detector 96px, flip p=0.5", r, unit))
    write_report(results, out, quick=args.quick, skipped=[])
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
