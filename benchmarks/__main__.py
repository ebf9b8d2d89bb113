"""Run the benchmark table side by side, print it and write the JSON report (``make bench``).

``python -m benchmarks [--quick] [--only ID ...] [--out PATH] [--threads N]`` runs the measurements of the benchmark table (``benchmarks/suite.py``), each
side by side and interleaved in this one process, prints the table and
writes the JSON report: ``benchmarks/results/latest.json`` for a full run,
``benchmarks/results/quick.json`` for ``--quick`` (a smoke run on tiny
inputs, under two minutes). A benchmark, not a test: the exit status is 1
only when a measurement failed to run, never because a target was missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks.harness import Result, format_table, write_report
from benchmarks.suite import ALL_IDS, Context, Skip, cuda_available, select

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NO_CUDA = "no CUDA device on this machine (torch.cuda.is_available() is False)"


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _note(start: float, message: str) -> None:
    print(f"[{time.monotonic() - start:7.1f} s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny inputs, 1-2 repeats (< 2 minutes)")
    parser.add_argument("--only", nargs="+", metavar="ID", choices=ALL_IDS, help=f"run only these rows: {', '.join(ALL_IDS)}")
    parser.add_argument("--out", type=Path, default=None, help="report path (default results/latest.json or quick.json)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for the whole run (onnxruntime gets the same); "
                             "default: torch's default. Use 1 on a machine shared with other load.")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="training-overhead rows: time epochs in wall seconds (default) or process CPU seconds, "
                             "which other load on a shared machine barely moves")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp folder, removed)")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or RESULTS_DIR / ("quick.json" if args.quick else "latest.json")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    start = time.monotonic()
    load_before = _load()
    has_cuda = cuda_available()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(quick=args.quick, workdir=workdir, threads=args.threads, clock=args.clock)
    wanted = set(args.only or ALL_IDS)
    results: list[Result] = []
    skipped: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    timings: dict[str, float] = {}
    try:
        for measurement in select(args.only):
            rows = [row for row in measurement.ids if row in wanted]
            if measurement.requires_cuda and not has_cuda:
                skipped += [{"id": row, "reason": NO_CUDA} for row in rows]
                continue
            _note(start, f"running {', '.join(rows)}")
            began = time.monotonic()
            try:
                produced = measurement.run(ctx)
            except Skip as skip:
                skipped += [{"id": row, "reason": str(skip)} for row in rows]
                continue
            except Exception as exc:  # one broken measurement must not hide the others' numbers
                traceback.print_exc()
                failed += [{"id": row, "error": f"{type(exc).__name__}: {exc}"} for row in rows]
                continue
            finally:
                timings[",".join(rows)] = round(time.monotonic() - began, 1)
            results += [r for r in produced if r.id in wanted]
            _note(start, f"done {', '.join(rows)} in {timings[','.join(rows)]} s")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    run_info = {
        "argv": sys.argv[1:] if argv is None else argv,
        "threads": args.threads,
        "clock": args.clock,
        "elapsed_s": round(time.monotonic() - start, 1),
        "seconds_per_measurement": timings,
        "load_average_before": load_before,
        "load_average_after": _load(),
    }
    write_report(results, out, quick=args.quick, skipped=skipped, failed=failed, run=run_info)
    print(format_table(results))
    for entry in skipped:
        print(f"skipped {entry['id']}: {entry['reason']}")
    for entry in failed:
        print(f"FAILED  {entry['id']}: {entry['error']}")
    print(f"{'quick' if args.quick else 'full'} run took {run_info['elapsed_s']} s "
          f"(load average {load_before} -> {run_info['load_average_after']}); report: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
