"""What running a job on a Ray cluster costs against running it on this machine (issue 18).

The same tiny training run (simple_cnn, generated 32 px shapes, a few
epochs) is started through the job queue of two servers, interleaved
(A B A B ...): one with the ``local`` executor (a cold worker process: a
cluster node has no warm workers either), one with the ``ray`` executor
pointed at a private head node started here (2 CPUs, token auth on, always
stopped at the end). Each side is timed from ``start_run`` (the API's
``POST .../run``) to the record saying ``completed``; the ratio is
``ray / local`` (lower is better): what Ray Job submission, the job
supervisor and the fresh interpreter on the node add to the same work. The
same config trained across 2 Ray Train workers (``hardware.executor: ray``)
is timed once more and reported beside it (``extra``): DDP on one 2-core
machine is no faster, it shows the fixed cost of a Ray Train worker group.

Run ``python -m benchmarks --only cluster_run_overhead`` or
``python -m benchmarks.cluster_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Result, Side, format_table, interleave, write_report

ENDED = ("completed", "failed", "stopped", "interrupted")


def _config(epochs: int, ray_workers: int = 0) -> dict[str, Any]:
    config: dict[str, Any] = {
        "model": {"architecture": "simple_cnn"},
        "data": {"image_size": [32, 32], "batch_size": 32, "num_workers": 0, "augmentations": {"train": [], "val": []}},
        "training": {"max_epochs": epochs, "scheduler": {"name": "none"}, "early_stopping": None},
        "hardware": {"devices": ["cpu"]},
    }
    if ray_workers:
        config["hardware"] = {"executor": "ray", "num_workers": ray_workers, "cpus_per_worker": 1}
    return config


class BenchServer:
    """One server (its services and started queue) with one project of generated shapes."""

    def __init__(self, root: Path, source: Path, **settings: Any) -> None:
        from modelyard.core.datasets.splits import Ratios
        from modelyard.core.services import build_services
        from modelyard.core.settings import Settings

        self.services = build_services(Settings(workspace=root, import_roots=[source], scheduler_interval_s=0.1,
                                                **settings))
        self.project = self.services.projects.create("cluster bench").id
        self.services.datasets.import_local(self.project, str(source), format="imagefolder")
        self.services.splits.create(self.project, "bench", Ratios(train=0.8, val=0.2), seed=0)
        self.services.queue.start()

    def timed_run(self, config: dict[str, Any]) -> float:
        """Seconds from starting a run of ``config`` to its ``completed`` record."""
        experiment = self.services.experiments.create(self.project, f"e{time.monotonic_ns()}", config=config)
        start = time.perf_counter()
        run = self.services.runs.start_run(self.project, experiment["id"])
        record = self.services.runs.get_run(self.project, run.id)
        while record.status not in ENDED:
            time.sleep(0.1)
            record = self.services.runs.get_run(self.project, run.id)
        seconds = time.perf_counter() - start
        if record.status != "completed":
            raise RuntimeError(f"run {run.id} ended {record.status}: {record.error}")
        return seconds

    def close(self) -> None:
        self.services.queue.shutdown()


def bench_cluster_overhead(workdir: Path, images: int = 300, epochs: int = 3, repeats: int = 3) -> dict[str, Any]:
    """Both sides' seconds per run, and one 2-worker Ray Train run (see the module docstring)."""
    from modelyard.core.sample_data import SHAPES, generate_shapes
    from tests.helpers.ray_cluster import local_ray_cluster

    source = workdir / "source"
    generate_shapes(source, per_class=max(2, images // len(SHAPES)), size=32, seed=0)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with local_ray_cluster(num_cpus=2) as cluster:
        local = BenchServer(workdir / "local", source, executor="local", warm_workers=0)
        ray = BenchServer(workdir / "ray", source, executor="ray", ray_address=cluster.address,
                    ray_token_file=cluster.token_file)
        try:
            ray.timed_run(_config(1))  # the first job on a new cluster also starts its job agent's worker pool
            ray_s, local_s = interleave(lambda: ray.timed_run(_config(epochs)), lambda: local.timed_run(_config(epochs)),
                                        repeats)
            ray_train_s = ray.timed_run(_config(epochs, ray_workers=2))
        finally:
            ray.close()
            local.close()
    return {"ray": ray_s, "local": local_s, "ray_train_2_workers": ray_train_s, "images": images, "epochs": epochs,
            "repeats": repeats}


def cluster_result(r: dict[str, Any]) -> Result:
    return Result(
        id="cluster_run_overhead",
        compares=(f"start_run -> completed of the same simple_cnn 32 px run ({r['images']} generated images, "
                  f"{r['epochs']} epochs, 1 process) on the ray executor (one Ray Job on a private 2-CPU head node "
                  "on this machine, token auth on) against the local executor (a cold worker process); interleaved"),
        ours=Side("ray executor", "s", r["ray"]), against=Side("local executor", "s", r["local"]),
        ratio_kind="ours/against", target="<= 3x the local wall time", target_value=3.0, higher_is_better=False,
        notes="the same run trained across 2 Ray Train workers (DDP, gloo) on the same 2 cores: "
              f"{r['ray_train_2_workers']:.1f} s (extra.ray_train_2_workers_s)",
        extra={"ray_train_2_workers_s": r["ray_train_2_workers"]},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of a smaller run (a smoke run)")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        r = bench_cluster_overhead(Path(tmp), images=60 if args.quick else 300, epochs=2 if args.quick else 3,
                                   repeats=1 if args.quick else 3)
    result = cluster_result(r)
    print(format_table([result]))
    if args.report is not None:
        write_report([result], args.report, quick=args.quick, skipped=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
