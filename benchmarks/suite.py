"""Every measurement of the benchmark table: its row ids, sizes for quick and full runs, and how to run it.

Each measurement adapts one of the benchmark modules to harness ``Result``
rows carrying the table's id, what they compare, the ratio kind and target.
Sizes come from ``Context.pick(quick, full)``: quick runs are smoke runs of
the same code on tiny inputs (CI), full runs are the numbers we quote.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.harness import Result, Side
from benchmarks.photos import PhotoProject, photo_project

T = TypeVar("T")


@dataclass
class Context:
    """What measurements share in one harness run: size mode, scratch folder, thread setting, fixtures."""

    quick: bool
    workdir: Path
    #: torch intra-op threads set for the run (``None``: torch's default); onnxruntime is given the same
    threads: int | None = None
    #: how the training-overhead rows time epochs: ``wall`` seconds or process ``cpu`` seconds (robust to other load)
    clock: str = "wall"
    _photos: PhotoProject | None = field(default=None, repr=False)

    def pick(self, quick: T, full: T) -> T:
        return quick if self.quick else full

    def photos(self) -> PhotoProject:
        """The imported 500x375 JPEG project, built once per run (64 photos quick, 256 full)."""
        if self._photos is None:
            self._photos = photo_project(self.workdir / "photos", self.pick(64, 256))
        return self._photos

    def scratch(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir))


class Skip(Exception):
    """Raised by a measurement that cannot run here; its rows are reported as skipped with this reason."""


@dataclass(frozen=True)
class Measurement:
    """One runnable benchmark producing the rows ``ids`` of the table."""

    ids: tuple[str, ...]
    run: Callable[[Context], list[Result]]
    requires_cuda: bool = False


# -- training ------------------------------------------------------------------------------


def _train_overhead(arch: str, image_px: int, target: float, quick_images: int, full_images: int,
                    full_repeats: int) -> Callable[[Context], list[Result]]:
    """Many short engine/plain pairs rather than a few long ones: load on a shared machine drifts within minutes."""

    def run(ctx: Context) -> list[Result]:
        from benchmarks.train_bench import bench_train_overhead

        r = bench_train_overhead(arch, image_px, batch=64, n_images=ctx.pick(quick_images, full_images),
                                 epochs=ctx.pick(2, 3), repeats=ctx.pick(1, full_repeats), clock=ctx.clock,
                                 threads=ctx.threads)
        return [_overhead_result(ctx, f"train_overhead_{arch}", target, r, (
            f"run engine (train_run: Lightning, DataModule memory cache, run files, callbacks) vs hand-written "
            f"PyTorch loop, same {arch} {image_px}px, seed, AdamW, batch {r['batch']}, same decoded uint8 images "
            f"({r['n_images']} generated, ~94% train), CPU, {r['torch_threads']} torch thread(s)"))]

    return run


def _overhead_result(ctx: Context, row_id: str, target: float, r: dict[str, Any], setting: str) -> Result:
    """A training-overhead row from ``train_bench``'s figures: training-loop images per second (or CPU second)."""
    unit, per = ("img/cpu-s", "process CPU second") if ctx.clock == "cpu" else ("img/s", "wall second")
    return Result(
        id=row_id,
        compares=f"{setting}; training-loop images per {per} over epochs 2..{r['epochs']}",
        ours=Side("run engine", unit, r["engine_values"]), against=Side("plain loop", unit, r["plain_values"]),
        ratio_kind="ours/against", target=f">= {target}x", target_value=target, higher_is_better=True,
        notes=f"median of paired (neighbouring) ratios {r['paired_ratio_median']:.3f}; whole epochs incl. "
              f"validation + checkpoints {r['whole_epoch_ratio']:.3f}x",
        extra={k: v for k, v in r.items() if k not in ("engine_values", "plain_values")},
    )


def _train_overhead_detection(ctx: Context) -> list[Result]:
    """simple_detector 96 px: fewer, longer pairs than the classification rows (a detector step is ~10x theirs)."""
    from benchmarks.train_bench import bench_train_overhead_detection

    r = bench_train_overhead_detection(image_px=96, batch=32, n_images=ctx.pick(128, 512), epochs=ctx.pick(2, 3),
                                       repeats=ctx.pick(1, 5), clock=ctx.clock, threads=ctx.threads)
    return [_overhead_result(ctx, "train_overhead_detection", 0.95, r, (
        f"run engine (train_run of an object_detection project, COCO-imported: Lightning, DataModule memory cache, "
        f"per-image seeded augmentation through the task runtime, run files, callbacks; num_workers 0) vs "
        f"detection_plain.train_plain, same simple_detector {r['image_px']}px, seed, AdamW + one-cycle, batch "
        f"{r['batch']}, random horizontal flip p=0.5 on both sides, same decoded NCHW uint8 canvases "
        f"({r['n_images']} generated shapes-detection, ~94% train), CPU, {r['torch_threads']} torch thread(s)"))]


def _real_vs_synthetic(ctx: Context) -> list[Result]:
    from benchmarks.real_data_bench import bench_real_vs_synthetic

    return [bench_real_vs_synthetic(ctx.photos(), epochs=ctx.pick(1, 3), repeats=ctx.pick(1, 3))]


# -- data loading -----------------------------------------------------------------------------


def _cached_vs_decode(ctx: Context) -> list[Result]:
    from benchmarks.loader_bench import bench_cached_vs_decode

    return [bench_cached_vs_decode(ctx.photos(), repeats=ctx.pick(2, 5), min_seconds=ctx.pick(0.2, 0.5))]


def _draft_decode(ctx: Context) -> list[Result]:
    from benchmarks.loader_bench import bench_draft_decode

    return [bench_draft_decode(ctx.photos(), repeats=ctx.pick(2, 5), min_seconds=ctx.pick(0.2, 0.5))]


# -- API and import ------------------------------------------------------------------------------


def _list_http(ctx: Context) -> list[Result]:
    from benchmarks.http_bench import bench_list_http

    return bench_list_http(ctx.scratch("list"), images=ctx.pick(20_000, 100_000), repeats=ctx.pick(30, 300),
                           probes=ctx.pick(2, 7))


def _import_10k(ctx: Context) -> list[Result]:
    from benchmarks.datasets_bench import bench_import_10k

    r = bench_import_10k(ctx.scratch("import"), repeats=ctx.pick(1, 3), count=ctx.pick(300, 10_000))
    runs = r["all_s"]
    decode_ratio = statistics.median(runs["bare_copy_open_decode"]) / statistics.median(runs["ours"])
    return [Result(
        id="import_10k",
        compares=(f"import_local of {r['images']} {r['image_size_px']}px PNGs through the dataset service (validate, hash, "
                  "copy, index, dataset.json) vs a bare loop copying each file and opening it with Pillow; seconds, "
                  "ratio = bare / ours"),
        ours=Side("dataset import", "s", runs["ours"]), against=Side("bare copy + Pillow open", "s", runs["bare_copy_open"]),
        ratio_kind="against/ours", target=">= 0.5x", target_value=0.5, higher_is_better=True,
        notes=f"against copy + open + full decode instead: {decode_ratio:.3f}x; ours {r['images_per_s']:.0f} img/s",
        extra={k: v for k, v in r.items() if k != "all_s"} | {"bare_copy_open_decode_s": runs["bare_copy_open_decode"]},
    )]


SCALE_ROWS = ("index_build", "index_build_warm", "split_create", "rss", "list_page")


def _scale(label: str, full_images: int, quick_images: int | None) -> Callable[[Context], list[Result]]:
    """The ``scale_<label>_*`` rows (issue 19); ``quick_images`` ``None``: skipped in ``--quick`` (minutes of work)."""

    def run(ctx: Context) -> list[Result]:
        from benchmarks.scale_bench import bench_scale

        if ctx.quick and quick_images is None:
            raise Skip(f"{label} images take minutes; run without --quick (e.g. --only scale_{label}_split_create)")
        count = ctx.pick(quick_images, full_images)
        r = bench_scale(ctx.scratch(f"scale-{label}"), count, repeats=ctx.pick(1, 3), split_repeats=ctx.pick(1, 2),
                        page_repeats=ctx.pick(10, 50))
        size = f"{count} synthetic images ({r['dataset_json_bytes'] / 1e6:.0f} MB dataset.json)"
        extra = {k: v for k, v in r.items() if not isinstance(v, list)}
        for written in ("cache_write_after_build_s", "cache_write_after_split_s"):  # behind the answer, not in the rows
            extra[f"{written}_median"] = statistics.median(r[written])

        def row(name: str, compares: str, side: Side, target: float, unit_text: str) -> Result:
            return Result(id=f"scale_{label}_{name}", compares=f"{compares}; {size}", ours=side, against=None,
                          ratio_kind="absolute", target=f"<= {target:g} {unit_text}", target_value=target,
                          higher_is_better=False, extra=extra)

        return [
            row("index_build", "store.index of a fresh store, no cache beside dataset.json (cold; its cache is written "
                               "behind the answer: cache_write_after_build_s_median)",
                Side("cold index build", "s", r["index_build_cold_s"]), 2.0, "s"),
            row("index_build_warm", "store.index of a fresh store, from the on-disk index cache (warm)",
                Side("warm index load", "s", r["index_build_warm_s"]), 0.3, "s"),
            row("split_create", "services.splits.create 0.8/0.1/0.1 stratified, index loaded, dataset.json rewritten "
                                "(index cache written behind: cache_write_after_split_s_median)",
                Side("split create", "s", r["split_create_s"]), 3.0, "s"),
            row("rss", "peak RSS of a fresh server process (cold index) after listing, previewing and creating a split "
                       "over HTTP", Side("peak RSS", "GB", [r["rss_peak_bytes"] / 1e9]), 1.2, "GB"),
            row("list_page", f"GET page of {PAGE_SIZE_NOTE} through uvicorn, slowest repeated sort/filter "
                             f"({r['list_page_combination']})", Side("list page", "ms", r["list_page_ms"]), 5.0, "ms"),
        ]

    return run


PAGE_SIZE_NOTE = 50


def _scale_train(label: str, full_images: int, quick_images: int | None) -> Callable[[Context], list[Result]]:
    """``scale_<label>_train_samples``: a training worker's split samples from the index vs from the parsed document."""

    def run(ctx: Context) -> list[Result]:
        from benchmarks.scale_train_bench import bench_train_samples

        if ctx.quick and quick_images is None:
            raise Skip(f"{label} images take minutes; run without --quick (--only scale_{label}_train_samples)")
        count = ctx.pick(quick_images, full_images)
        r = bench_train_samples(ctx.scratch(f"scale-train-{label}"), count, repeats=ctx.pick(1, 2))
        new, old = r["new"], r["old"]
        return [Result(
            id=f"scale_{label}_train_samples",
            compares=(f"a worker's train + val samples of a split, {count} synthetic images: load_dataset_view (index "
                      "cache) + the runtime's column read vs read_json + the old dict-per-image split_items; fresh "
                      "process each, seconds, ratio = old / new"),
            ours=Side("index view + samples", "s", [run["total_s"] for run in new]),
            against=Side("read_json + dict samples", "s", [run["total_s"] for run in old]),
            ratio_kind="against/ours", target=">= 1x", target_value=1.0, higher_is_better=True,
            notes=(f"peak RSS new {max(run['rss_peak_bytes'] for run in new) / 1e9:.2f} GB vs old "
                   f"{max(run['rss_peak_bytes'] for run in old) / 1e9:.2f} GB (baseline with torch "
                   f"{new[0]['rss_baseline_bytes'] / 1e9:.2f} GB); same items both ways"),
            extra={k: v for k, v in r.items() if k not in ("new", "old")},
        )]

    return run


def _scale_import(label: str, full_images: int, quick_images: int | None) -> Callable[[Context], list[Result]]:
    """``scale_<label>_import_append``: 1 000 images imported into a big dataset, streamed append vs whole document."""

    def run(ctx: Context) -> list[Result]:
        from benchmarks.scale_import_bench import bench_import_append

        if ctx.quick and quick_images is None:
            raise Skip(f"{label} images take minutes; run without --quick (--only scale_{label}_import_append)")
        count = ctx.pick(quick_images, full_images)
        r = bench_import_append(ctx.scratch(f"scale-import-{label}"), count, added=ctx.pick(100, 1000))
        return [Result(
            id=f"scale_{label}_import_append",
            compares=(f"import_local of {r['added']} PNGs into {count} synthetic images: streamed append (index loaded) "
                      "vs the whole-document merge and rewrite; seconds, ratio = whole / streamed"),
            ours=Side("streamed append", "s", [r["streamed_s"]]), against=Side("whole document", "s", [r["whole_s"]]),
            ratio_kind="against/ours", target=">= 1x", target_value=1.0, higher_is_better=True,
            notes=(f"same bytes both ways: {r['same_bytes']}; peak RSS streamed {r['rss_streamed_peak_bytes'] / 1e9:.2f} GB "
                   f"vs whole {r['rss_whole_peak_bytes'] / 1e9:.2f} GB; with no index yet {r['streamed_no_index_s']:.2f} s; "
                   f"into an empty project {r['into_empty_s']:.2f} s"),
            extra=r,
        )]

    return run


# -- inference and export -------------------------------------------------------------------------


def _ort_vs_eager(ctx: Context) -> list[Result]:
    from benchmarks.eval_bench import bench_ort_vs_eager

    r = bench_ort_vs_eager("resnet18", 1, 224, repeats=ctx.pick(2, 7), min_seconds=ctx.pick(0.3, 1.0),
                           ort_threads=ctx.threads)
    return [Result(
        id="ort_vs_eager_b1",
        compares=(f"onnxruntime CPU (exported ONNX file) vs eager PyTorch (no_grad), resnet18 224px batch 1, same input; "
                  f"torch threads {r['torch_threads']}, onnxruntime threads {r['ort_threads']}; images/s"),
        ours=Side("onnxruntime", "img/s", r["ort_values"]), against=Side("eager torch", "img/s", r["eager_values"]),
        ratio_kind="ours/against", target=">= 1.5x", target_value=1.5, higher_is_better=True,
        extra={k: v for k, v in r.items() if not k.endswith("_values")},
    )]


def _export_time(ctx: Context) -> list[Result]:
    from benchmarks.eval_bench import bench_export_time_resnet18

    verify_images = ctx.pick(8, 64)
    runs = [bench_export_time_resnet18(224, verify_images=verify_images, formats=("onnx",)) for _ in range(ctx.pick(1, 3))]
    totals = [run["onnx"]["export_s"] + run["onnx"]["verify_s"] for run in runs]
    if not all(run["onnx"]["verification_passed"] for run in runs):
        raise RuntimeError(f"the exported resnet18 failed verification: {runs}")
    return [Result(
        id="export_time_resnet18",
        compares=(f"ONNX export (with onnxslim) of resnet18 224px + verification against PyTorch on {verify_images} "
                  "images at batch 1, as the export worker does; absolute seconds on this machine"),
        ours=Side("export + verify", "s", totals), against=None,
        ratio_kind="absolute", target="< 30 s", target_value=30.0, higher_is_better=False,
        extra={"runs": runs},
    )]


def _jobs(ctx: Context) -> list[Result]:
    from benchmarks.jobs_bench import bench_jobs

    r = bench_jobs(ctx.scratch("jobs"), images=5000, repeats=ctx.pick(1, 3), epochs=1, threads=ctx.threads)
    warm, cold = r["warm"], r["cold"]
    setting = (f"real `modelyard serve` over HTTP, 5,000 generated 32 px images split 80/10/10, resnet18 32 px trained "
               f"1 epoch; {r['repeats']} evaluation(s) and {r['repeats']} export(s); warm = one pre-started worker "
               "(waited for until ready), cold = --warm-workers 0")
    starts_warm = warm["eval_start"] + warm["export_start"]
    starts_cold = cold["eval_start"] + cold["export_start"]
    return [
        Result(id="job_start_latency", compares=f"POST -> status running, evaluations and exports; {setting}",
               ours=Side("warm worker", "s", starts_warm), against=Side("cold start", "s", starts_cold),
               ratio_kind="absolute", target="<= 0.3 s", target_value=0.3, higher_is_better=False),
        Result(id="eval_500_wall", compares=f"POST -> completed, evaluation of the 500 test images; {setting}",
               ours=Side("warm worker", "s", warm["eval_wall"]), against=Side("cold start", "s", cold["eval_wall"]),
               ratio_kind="absolute", target="<= 1.5 s", target_value=1.5, higher_is_better=False),
        Result(id="export_resnet18_32_wall",
               compares=f"POST -> completed, ONNX export with onnxslim + verification on real images; {setting}",
               ours=Side("warm worker", "s", warm["export_wall"]), against=Side("cold start", "s", cold["export_wall"]),
               ratio_kind="absolute", target="<= 2.5 s", target_value=2.5, higher_is_better=False),
    ]


def _cluster_overhead(ctx: Context) -> list[Result]:
    from benchmarks.cluster_bench import bench_cluster_overhead, cluster_result

    r = bench_cluster_overhead(ctx.scratch("cluster"), images=ctx.pick(60, 300), epochs=ctx.pick(2, 3),
                               repeats=ctx.pick(1, 3))
    return [cluster_result(r)]


def _predict_http_vs_inprocess(ctx: Context) -> list[Result]:
    from benchmarks.predict_bench import bench_http_vs_inprocess, served

    repeats = ctx.pick(10, 150)
    return [served(ctx.workdir, ctx.quick, lambda setup, url: bench_http_vs_inprocess(setup, url, repeats))]


def _predict_batching(ctx: Context) -> list[Result]:
    from benchmarks.predict_bench import bench_batching_throughput, served

    repeats, requests = ctx.pick(2, 5), ctx.pick(2, 6)
    return [served(ctx.workdir, ctx.quick,
                   lambda setup, url: bench_batching_throughput(setup, url, repeats, requests_per_client=requests))]


# -- GPU -------------------------------------------------------------------------------------------


def _gpu_optimised(ctx: Context) -> list[Result]:
    import torch

    from benchmarks.gpu_bench import bench_optimised_vs_fp32

    return [bench_optimised_vs_fp32(torch.device("cuda"), steps=ctx.pick(5, 20), repeats=ctx.pick(1, 5))]


def _gpu_engine(ctx: Context) -> list[Result]:
    raise Skip("the run engine has no channels_last / torch.compile option yet, so there is no like-for-like "
               "engine run to compare with the optimised plain loop")


MEASUREMENTS: list[Measurement] = [
    Measurement(("train_overhead_simple_cnn",), _train_overhead("simple_cnn", 28, 0.95, 128, 512, 7)),
    Measurement(("train_overhead_resnet18",), _train_overhead("resnet18", 64, 0.97, 128, 256, 7)),
    Measurement(("train_overhead_detection",), _train_overhead_detection),
    Measurement(("loader_cached_vs_decode",), _cached_vs_decode),
    Measurement(("loader_draft_decode",), _draft_decode),
    Measurement(("train_real_vs_synthetic",), _real_vs_synthetic),
    Measurement(("list_images_100k", "list_last_vs_first_page"), _list_http),
    Measurement(("import_10k",), _import_10k),
    Measurement(tuple(f"scale_100k_{row}" for row in SCALE_ROWS), _scale("100k", 100_000, 10_000)),
    Measurement(tuple(f"scale_1m_{row}" for row in SCALE_ROWS), _scale("1m", 1_000_000, None)),
    Measurement(("scale_100k_train_samples",), _scale_train("100k", 100_000, 10_000)),
    Measurement(("scale_1m_train_samples",), _scale_train("1m", 1_000_000, None)),
    Measurement(("scale_100k_import_append",), _scale_import("100k", 100_000, 10_000)),
    Measurement(("scale_1m_import_append",), _scale_import("1m", 1_000_000, None)),
    Measurement(("ort_vs_eager_b1",), _ort_vs_eager),
    Measurement(("export_time_resnet18",), _export_time),
    Measurement(("predict_http_vs_inprocess_b1",), _predict_http_vs_inprocess),
    Measurement(("predict_batching_throughput",), _predict_batching),
    Measurement(("job_start_latency", "eval_500_wall", "export_resnet18_32_wall"), _jobs),
    Measurement(("cluster_run_overhead",), _cluster_overhead),
    Measurement(("train_gpu_resnet18_224_optimised",), _gpu_optimised, requires_cuda=True),
    Measurement(("train_gpu_engine_vs_plain_optimised",), _gpu_engine, requires_cuda=True),
]
ALL_IDS: list[str] = [row for measurement in MEASUREMENTS for row in measurement.ids]


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def select(only: list[str] | None) -> list[Measurement]:
    """The measurements producing any of ``only`` (all when ``None``), in table order."""
    if not only:
        return list(MEASUREMENTS)
    unknown = sorted(set(only) - set(ALL_IDS))
    if unknown:
        raise ValueError(f"unknown benchmark id(s) {', '.join(unknown)}; choose from {', '.join(ALL_IDS)}")
    return [m for m in MEASUREMENTS if set(m.ids) & set(only)]
