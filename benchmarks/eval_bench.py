"""Evaluation and export benchmarks (issue 6).

* ``bench_results_100k``: page latency of the per-image results index at
  100,000 results (cold first page, warm first/last page, the worst uncached
  filter). Target: well under 50 ms per page.
* ``bench_ort_vs_eager``: ONNX Runtime (CPU) against eager PyTorch on the same
  network and input, interleaved, in images/s (``simple_cnn`` and
  ``resnet18``, batch 1 and 32).
* ``bench_export_time_resnet18``: wall time of the ONNX and TorchScript
  exports of resnet18 at 224 px, and of verifying each on 64 images.

Run ``python -m benchmarks.eval_bench [--quick]``; it writes
``benchmarks/results/eval_bench.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Result, Side, format_table, interleave, write_report

RESULTS_ROWS = 100_000
LATENCY_TARGET_MS = 50.0


def _synthetic_table(rows: int, num_classes: int, seed: int = 0) -> Any:
    from modelyard.core.evaluation.results import ResultsTable

    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes, rows)
    logits = rng.normal(size=(rows, num_classes)).astype(np.float32)
    logits[np.arange(rows), targets] += rng.uniform(0, 4, rows).astype(np.float32)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    losses = -np.log(probabilities[np.arange(rows), targets])
    names = [f"img_{i:07d}.jpg" for i in rng.permutation(rows)]
    subsets = np.where(rng.random(rows) < 0.5, "val", "test").tolist()
    classes = [f"class_{i:02d}" for i in range(num_classes)]
    return ResultsTable.from_probabilities(classes, names, subsets, targets, probabilities, losses)


def _ms(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def bench_results_100k(workdir: Path, rows: int = RESULTS_ROWS, num_classes: int = 20, repeats: int = 20) -> dict[str, Any]:
    """Milliseconds per results page at ``rows`` results (what ``GET .../results`` does, minus HTTP)."""
    from modelyard.core.evaluation.index import ResultsIndexCache, ResultsQuery
    from modelyard.core.evaluation.results import RESULTS_FILE

    path = Path(workdir) / RESULTS_FILE
    _synthetic_table(rows, num_classes).save(path)
    cache = ResultsIndexCache()
    first = ResultsQuery(page=1, page_size=50)
    cold_ms = _ms(lambda: cache.get(path).query(first))  # load + index + first sort order
    index = cache.get(path)
    last_page = (rows + 49) // 50
    queries = {
        "first_page": first,
        "last_page": ResultsQuery(page=last_page, page_size=50),
        "error_sorted_first_page": ResultsQuery(sort_by="error"),
        "confidence_asc_page_500": ResultsQuery(sort_by="confidence", sort_order="asc", page=100, page_size=500),
    }
    for query in queries.values():  # build each sort order once, as the first request of a kind would
        index.query(query)
    timings = {name: [_ms(lambda q=q: index.query(q)) for _ in range(repeats)] for name, q in queries.items()}
    # the worst case: a filter combination never seen before, so its selection is computed on the request
    worst = []
    for i in range(repeats):
        query = ResultsQuery(sort_by="error", filter_correct=False, filter_class=f"class_{i % num_classes:02d}",
                             filter_predicted=f"class_{(i + 1) % num_classes:02d}", page=2, page_size=50)
        worst.append(_ms(lambda q=query: index.query(q)))
        index._selections.clear()  # noqa: SLF001 - measure the uncached path every time
    timings["uncached_triple_filter"] = worst
    summary = {name: {"median_ms": statistics.median(v), "max_ms": max(v)} for name, v in timings.items()}
    worst_ms = max(s["max_ms"] for s in summary.values())
    return {"rows": rows, "cold_first_page_ms": cold_ms, "pages": summary, "worst_page_ms": worst_ms,
            "target_ms": LATENCY_TARGET_MS, "met": worst_ms < LATENCY_TARGET_MS}


def _model(arch: str, image_px: int, num_classes: int = 10) -> Any:
    from modelyard.core.models import build_model
    from modelyard.core.plugin_manager import default_plugin_host

    model = build_model(default_plugin_host().architectures, arch, num_classes=num_classes, image_size=(image_px, image_px))
    return model.eval()


def _metadata(arch: str, image_px: int, num_classes: int = 10) -> Any:
    from modelyard.core.plugin_types import ExportMetadata

    return ExportMetadata(classes=[f"c{i}" for i in range(num_classes)], input_size=(image_px, image_px),
                          mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], architecture=arch, run_id="run-bench000")


def _export(fmt: str, model: Any, example: Any, out_dir: Path, arch: str, image_px: int) -> tuple[Path, Any]:
    from modelyard.core.export_options import resolve_options
    from modelyard.core.plugin_manager import default_plugin_host

    exporter = default_plugin_host().exporters.get(fmt)
    options = resolve_options(exporter, {})
    path = exporter.export(model, example, options, out_dir, _metadata(arch, image_px))
    return Path(path), exporter.load_runner(Path(path), options)


def _ort_runner_with_threads(path: Path, threads: int) -> Any:
    """``predict`` on a CPU onnxruntime session limited to ``threads`` intra-op threads (to match torch's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


def bench_ort_vs_eager(arch: str, batch: int, image_px: int, repeats: int = 7, min_seconds: float = 0.5,
                       ort_threads: int | None = None) -> dict[str, Any]:
    """Images/s of onnxruntime (CPU) vs eager PyTorch for one architecture, batch and input size, interleaved.

    ``ort_threads``: limit onnxruntime to that many intra-op threads, e.g. ``torch.get_num_threads()`` so both
    runtimes get the same cores (default: onnxruntime's own default, one per physical core).
    """
    import torch

    model = _model(arch, image_px)
    example = torch.randn(1, 3, image_px, image_px)
    inputs = torch.randn(batch, 3, image_px, image_px)
    numpy_inputs = inputs.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path, predict = _export("onnx", model, example, Path(tmp), arch, image_px)
        if ort_threads is not None:
            predict = _ort_runner_with_threads(path, ort_threads)
        with torch.no_grad():
            reference = model(inputs).numpy()
        max_abs_diff = float(np.max(np.abs(reference - predict(numpy_inputs))))

        def rate(step: Any) -> float:
            step()  # warm-up
            count, start = 0, time.perf_counter()
            while True:
                step()
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds:
                    return count * batch / elapsed

        def eager() -> None:
            with torch.no_grad():
                model(inputs)

        ort_rates, eager_rates = interleave(lambda: rate(lambda: predict(numpy_inputs)), lambda: rate(eager), repeats)
    return {
        "arch": arch, "batch": batch, "image_px": image_px,
        "onnxruntime_images_per_s": statistics.median(ort_rates), "eager_images_per_s": statistics.median(eager_rates),
        "speedup": statistics.median(ort_rates) / statistics.median(eager_rates),
        "ort_values": ort_rates, "eager_values": eager_rates, "max_abs_diff": max_abs_diff,
        "torch_threads": torch.get_num_threads(), "ort_threads": ort_threads if ort_threads is not None else "default",
    }


def bench_export_time_resnet18(image_px: int = 224, verify_images: int = 64,
                               formats: tuple[str, ...] = ("onnx", "torchscript")) -> dict[str, Any]:
    """Seconds to export resnet18 (ONNX with onnxslim, TorchScript) and to verify each on ``verify_images`` images."""
    import torch

    from modelyard.core.export.verify import compare_outputs, predict_in_chunks

    model = _model("resnet18", image_px)
    example = torch.randn(1, 3, image_px, image_px)
    images = torch.randn(verify_images, 3, image_px, image_px)
    with torch.no_grad():
        reference = model(images).numpy()
    out: dict[str, Any] = {"image_px": image_px, "verify_images": verify_images}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in formats:
            start = time.perf_counter()
            path, predict = _export(fmt, model, example, Path(tmp) / fmt, "resnet18", image_px)
            export_s = time.perf_counter() - start
            start = time.perf_counter()
            verification = compare_outputs(reference, predict_in_chunks(predict, images.numpy(), 1), half=False)
            out[fmt] = {"export_s": export_s, "verify_s": time.perf_counter() - start, "size_bytes": path.stat().st_size,
                        "verification_passed": verification["passed"], "max_abs_diff": verification["max_abs_diff"]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_bench.json")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        page = bench_results_100k(Path(tmp), repeats=5 if args.quick else 20)
    results.append(Result(
        id="eval_results_page_100k", compares="worst results page at 100k rows (ms)",
        ours=Side("results index", "ms", [page["worst_page_ms"]]), against=None, ratio_kind="absolute",
        target=f"< {LATENCY_TARGET_MS:g} ms", target_value=LATENCY_TARGET_MS, higher_is_better=False, extra=page,
    ))
    for arch, px in (("simple_cnn", 64), ("resnet18", 224)):
        for batch in (1, 32):
            r = bench_ort_vs_eager(arch, batch, px, repeats=repeats)
            results.append(Result(
                id=f"ort_vs_eager_{arch}_b{batch}", compares=f"onnxruntime CPU vs eager torch, {arch} {px}px batch {batch}",
                ours=Side("onnxruntime", "img/s", r["ort_values"]), against=Side("eager torch", "img/s", r["eager_values"]),
                ratio_kind="ours/against", target=">= 1.0x (informational)", target_value=1.0, higher_is_better=True,
                extra={k: v for k, v in r.items() if not k.endswith("_values")},
            ))
    timing = bench_export_time_resnet18()
    results.append(Result(
        id="export_time_resnet18_onnx", compares="resnet18 224px ONNX export + 64-image verification (s)",
        ours=Side("export+verify", "s", [timing["onnx"]["export_s"] + timing["onnx"]["verify_s"]]), against=None,
        ratio_kind="absolute", target="informational", target_value=float("inf"), higher_is_better=False, extra=timing,
    ))
    write_report(results, args.out, quick=args.quick, skipped=[])
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
