"""Load test (issue 9): many HTTP clients and SSE subscribers against a real server while it trains.

What it does, on loopback only:

1. starts ``modelyard serve`` on ``127.0.0.1`` with a fresh workspace, imports
   generated shapes (``--images`` of them, ``--image-px`` square) and splits them;
2. starts one long training run (``simple_cnn``, CPU) and lets it warm up;
3. measures the run's training throughput for ``--baseline`` seconds with no load;
4. runs ``--clients`` closed-loop HTTP clients (no think time) for ``--duration``
   seconds on the listing, image and thumbnail endpoints while ``--sse``
   subscribers follow the run's event stream;
5. measures throughput again for ``--baseline`` seconds with no load, then stops
   the run and the server.

It reports every error (any status other than 200/304, any transport error,
any SSE stream that breaks), latency percentiles per endpoint, the training
throughput during the load against the mean of the two quiet windows, and
the server's RSS sampled every second from ``/proc/<pid>/status``.

``--pin`` (default when the machine has at least 2 cores) gives the training
worker the first half of the cores and the server plus this load generator
the other half, as an operator would with ``taskset``; ``--no-pin`` lets
everything share every core. Both are honest numbers for different
deployments; the report says which one it is.

Run ``python -m benchmarks.load_test`` (``make load``); ``--smoke`` is a
5-second, 5-client version used by the test suite. Writes
``benchmarks/results/load_test.json`` (``--out``) and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

LOOPBACK = "127.0.0.1"
OK_STATUSES = frozenset({200, 304})
STARTUP_TIMEOUT_S = 90.0
WARMUP_TIMEOUT_S = 240.0
METRICS_POLL_S = 0.5
RESULTS = Path(__file__).parent / "results" / "load_test.json"
_T0 = time.monotonic()


def note(message: str) -> None:
    """Progress on stderr, with seconds since start (the report goes to stdout and the JSON file)."""
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


# -- measurements ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """``q``-th percentile (0-100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Stats:
    """Latencies (seconds) and errors per endpoint kind."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def record(self, kind: str, seconds: float, error: str | None) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        if error is not None:
            self.errors.append({"kind": kind, "error": error})

    def summary(self, duration_s: float) -> dict[str, Any]:
        def describe(values: list[float]) -> dict[str, Any]:
            return {
                "requests": len(values),
                "per_s": round(len(values) / duration_s, 1) if duration_s else None,
                **{f"p{q}_ms": _ms(percentile(values, q)) for q in (50, 95, 99)},
                "max_ms": _ms(max(values) if values else None),
            }

        every = [v for values in self.latencies.values() for v in values]
        return {
            "overall": describe(every),
            "by_endpoint": {kind: describe(values) for kind, values in sorted(self.latencies.items())},
            "errors": len(self.errors),
            "error_samples": self.errors[:20],
        }


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (``VmRSS``), ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def slope_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, MiB)`` samples, in MiB per minute."""
    if len(samples) < 3:
        return None
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / denominator * 60


def rss_summary(samples: list[tuple[float, float]]) -> dict[str, Any]:
    values = [mib for _, mib in samples]
    if not values:
        return {"samples": 0}
    step = max(1, len(samples) // 20)
    return {
        "samples": len(values),
        "timeline_s_mib": [[round(t, 1), round(v, 1)] for t, v in samples[::step]],
        "start_mib": round(values[0], 1),
        "end_mib": round(values[-1], 1),
        "max_mib": round(max(values), 1),
        "growth_mib": round(values[-1] - values[0], 1),
        "slope_mib_per_min": round(s, 2) if (s := slope_per_min(samples)) is not None else None,
    }


# -- the server and its data -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    workspace: Path


def start_server(root: Path, import_root: Path) -> Server:
    """``modelyard serve`` on a free loopback port with a fresh workspace; waits for the health check."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    workspace = root / "workspace"
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "modelyard", "serve", "--host", LOOPBACK, "--port", str(port),
             "--workspace", str(workspace), "--import-root", str(import_root), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=root,
        )
    server = Server(process, f"http://{LOOPBACK}:{port}", workspace)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {root / 'server.log'}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.url + "/api/system/health", timeout=2).status_code == 200:
                return server
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"the server did not answer within {STARTUP_TIMEOUT_S} s")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:500]}")
    return response.json()["data"]


def prepare_project(http: httpx.Client, source: Path, image_px: int, epochs: int) -> dict[str, Any]:
    """A project with the generated images imported and split, and one experiment to train."""
    project = _ok(http.post("/api/projects", json={"name": "load test"}))
    _ok(http.post(f"/api/datasets/{project['id']}/import/local", json={"path": str(source)}))
    _ok(http.post(f"/api/splits/{project['id']}", json={"name": "80-20", "ratios": {"train": 0.8, "val": 0.2}, "seed": 0}))
    config = {
        "model": {"architecture": "simple_cnn"},
        "data": {"image_size": [image_px, image_px], "batch_size": 16, "num_workers": 0},
        "training": {"max_epochs": epochs, "scheduler": {"name": "none"}, "early_stopping": None},
        "hardware": {"devices": ["cpu"]},
    }
    experiment = _ok(http.post(f"/api/training/{project['id']}/experiments", json={"name": "long", "config": config}))
    listed = _ok(http.get(f"/api/datasets/{project['id']}/images", params={"page_size": 500}))
    return {"project_id": project["id"], "experiment_id": experiment["id"],
            "filenames": [item["filename"] for item in listed["items"]], "pages": listed["pages"]}


def targets_for(project: dict[str, Any], rng: random.Random) -> Callable[[], tuple[str, str]]:
    """A picker of ``(endpoint kind, path)``: listing, image and thumbnail endpoints, uniformly."""
    base = f"/api/datasets/{project['project_id']}"
    names: list[str] = project["filenames"]
    total = len(names)

    def pick() -> tuple[str, str]:
        kind = rng.choice(("list_projects", "list_images", "image", "thumbnail"))
        if kind == "list_projects":
            return kind, "/api/projects"
        if kind == "list_images":
            page = rng.randint(1, max(1, (total + 49) // 50))
            order = rng.choice(("filename", "class", "size"))
            return kind, f"{base}/images?page={page}&page_size=50&sort_by={order}"
        folder = "images" if kind == "image" else "thumbnails"
        return kind, f"{base}/{folder}/{rng.choice(names)}"

    return pick


# -- CPU placement -----------------------------------------------------------------------------


def pin_process_tree(pid: int, cpus: set[int]) -> None:
    """Set the affinity of every thread of ``pid`` (new threads inherit it from their creator)."""
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task), cpus)


def split_cores() -> tuple[set[int], set[int]] | None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    half = len(cores) // 2
    return set(cores[:half]), set(cores[half:])


# -- the load ----------------------------------------------------------------------------------


async def http_client(http: httpx.AsyncClient, pick: Callable[[], tuple[str, str]], deadline: float, stats: Stats) -> None:
    while time.monotonic() < deadline:
        kind, path = pick()
        started = time.perf_counter()
        error = None
        try:
            response = await http.get(path)
            if response.status_code not in OK_STATUSES:
                error = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        stats.record(kind, time.perf_counter() - started, error)


async def sse_subscriber(http: httpx.AsyncClient, path: str, deadline: float, counts: list[int], index: int,
                         stats: Stats) -> None:
    """Follow the stream until ``deadline``; a stream that breaks before it is an error."""
    try:
        async with http.stream("GET", path, timeout=httpx.Timeout(10.0, read=60.0)) as response:
            if response.status_code != 200:
                stats.errors.append({"kind": "sse", "error": f"HTTP {response.status_code}"})
                return
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    counts[index] += 1
                if time.monotonic() >= deadline:
                    return
        stats.errors.append({"kind": "sse", "error": "stream ended before the load did"})
    except httpx.HTTPError as exc:
        stats.errors.append({"kind": "sse", "error": f"{type(exc).__name__}: {exc}"})


async def sample_rss(pid: int, samples: list[tuple[float, float]], halt: asyncio.Event, origin: float) -> None:
    while not halt.is_set():
        value = rss_mb(pid)
        if value is not None:
            samples.append((time.monotonic() - origin, value))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), 1.0)


async def poll_metrics(url: str, run_path: str, seen: dict[int, tuple[float, dict[str, Any]]],
                       progress: list[tuple[float, float]], halt: asyncio.Event) -> None:
    """Note when each epoch's record appears (its arrival time), and sample the live progress throughput."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while not halt.is_set():
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                for record in (await http.get(run_path + "/metrics")).json()["data"]:
                    seen.setdefault(int(record["epoch"]), (time.monotonic(), record))
                speed = (await http.get(run_path)).json()["data"]["progress"].get("images_per_s")
                if speed:
                    progress.append((time.monotonic(), float(speed)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), METRICS_POLL_S)


def throughput_in(seen: dict[int, tuple[float, dict[str, Any]]], progress: list[tuple[float, float]],
                  start: float, end: float) -> dict[str, Any]:
    """Training images/s inside ``[start, end]``: mean of the epochs that ran entirely inside it, and the
    median of the live progress samples (what is left when epochs are longer than the window)."""
    inside = [
        record for arrived, record in seen.values()
        if record.get("images_per_s") and arrived - float(record.get("time_s") or 0) - METRICS_POLL_S >= start
        and arrived <= end + METRICS_POLL_S
    ]
    values = [float(r["images_per_s"]) for r in inside]
    samples = [speed for at, speed in progress if start <= at <= end]
    return {
        "epochs": len(values),
        "images_per_s": round(statistics.fmean(values), 1) if values else None,
        "progress_samples": len(samples),
        "progress_images_per_s": round(statistics.median(samples), 1) if samples else None,
    }


def compare(quiet: list[dict[str, Any]], loaded: dict[str, Any], key: str) -> dict[str, Any]:
    """Throughput under load against the mean of the quiet windows, by ``key``."""
    quiet_values = [w[key] for w in quiet if w[key]]
    baseline = statistics.fmean(quiet_values) if quiet_values else None
    ratio = loaded[key] / baseline if baseline and loaded[key] else None
    return {
        "baseline_images_per_s": round(baseline, 1) if baseline else None,
        "ratio_during_load": round(ratio, 3) if ratio else None,
        "degradation_pct": round((1 - ratio) * 100, 1) if ratio else None,
    }


async def measure(args: argparse.Namespace, server: Server, project: dict[str, Any], run_id: str) -> dict[str, Any]:
    run_base = f"/api/training/{project['project_id']}/runs/{run_id}"
    seen: dict[int, tuple[float, dict[str, Any]]] = {}
    progress: list[tuple[float, float]] = []
    halt = asyncio.Event()
    origin = time.monotonic()
    rss: list[tuple[float, float]] = []
    tasks = [asyncio.create_task(sample_rss(server.process.pid, rss, halt, origin)),
             asyncio.create_task(poll_metrics(server.url, run_base, seen, progress, halt))]

    note(f"waiting for {args.warmup_epochs} warm-up epoch(s)")
    warm_deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while len(seen) < args.warmup_epochs:  # the first epochs include start-up and cache filling
        if time.monotonic() > warm_deadline:
            raise RuntimeError(f"the run did not finish {args.warmup_epochs} epoch(s) in {WARMUP_TIMEOUT_S} s")
        await asyncio.sleep(0.2)

    note(f"quiet window ({args.baseline:g} s)")
    before = (time.monotonic(), time.monotonic() + args.baseline)
    await asyncio.sleep(args.baseline)
    note(f"load: {args.clients} clients + {args.sse} SSE subscribers for {args.duration:g} s")

    stats = Stats()
    rng = random.Random(args.seed)
    limits = httpx.Limits(max_connections=args.clients + args.sse + 4, max_keepalive_connections=args.clients + args.sse + 4)
    load_start = time.monotonic()
    deadline = load_start + args.duration
    sse_events = [0] * args.sse
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
        subscribers = [asyncio.create_task(sse_subscriber(http, run_base + "/stream", deadline, sse_events, i, stats))
                       for i in range(args.sse)]
        pick = targets_for(project, rng)
        await asyncio.gather(*(http_client(http, pick, deadline, stats) for _ in range(args.clients)))
        await asyncio.gather(*subscribers)
    load_end = time.monotonic()
    rss_load = [(t, v) for t, v in rss if load_start - origin <= t <= load_end - origin]

    note(f"load done ({len(stats.errors)} error(s)); quiet window ({args.baseline:g} s)")
    after = (time.monotonic(), time.monotonic() + args.baseline)
    await asyncio.sleep(args.baseline)
    halt.set()
    await asyncio.gather(*tasks)

    quiet = [throughput_in(seen, progress, *before), throughput_in(seen, progress, *after)]
    loaded = throughput_in(seen, progress, load_start, load_end)
    by_epochs = compare(quiet, loaded, "images_per_s")
    by_progress = compare(quiet, loaded, "progress_images_per_s")
    headline = by_epochs if by_epochs["ratio_during_load"] is not None else by_progress
    return {
        "http": stats.summary(load_end - load_start),
        "errors": len(stats.errors),
        "sse": {"subscribers": args.sse, "events_per_subscriber": sse_events,
                "errors": sum(1 for e in stats.errors if e["kind"] == "sse")},
        "training": {
            "before": quiet[0], "during_load": loaded, "after": quiet[1],
            **headline,
            "measured_by": "whole epochs" if headline is by_epochs else "live progress samples",
            "by_epochs": by_epochs, "by_progress": by_progress,
            "target_max_degradation_pct": 10.0,
        },
        "server_rss": {"whole_run": rss_summary(rss), "during_load": rss_summary(rss_load)},
        "load_window_s": round(load_end - load_start, 2),
    }


# -- orchestration -----------------------------------------------------------------------------


def stop_run(http: httpx.Client, project_id: str, run_id: str, workspace: Path) -> None:
    """Ask the run to stop; kill its worker group if it is still alive after a while (workers outlive servers)."""
    with contextlib.suppress(httpx.HTTPError):
        http.post(f"/api/training/{project_id}/runs/{run_id}/stop")
    deadline = time.monotonic() + 30
    record: dict[str, Any] = {}
    for run_json in workspace.glob(f"projects/{project_id}/experiments/*/runs/{run_id}/run.json"):
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(run_json.read_bytes())
            if record.get("status") not in ("pending", "running"):
                return
            time.sleep(0.5)
    pgid = record.get("worker_pgid")
    if isinstance(pgid, int) and pgid > 1 and pgid != os.getpgrp():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from modelyard.core.sample_data import SHAPES, generate_shapes

    with tempfile.TemporaryDirectory(prefix="modelyard-load-") as tmp:
        root = Path(tmp)
        source = root / "images"
        generate_shapes(source, per_class=max(1, args.images // len(SHAPES)), size=args.image_px, seed=0)
        note(f"generated {args.images} images; starting the server")
        server = start_server(root, source)
        note(f"server pid {server.process.pid} at {server.url}")
        run_id = project_id = None
        try:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                project = prepare_project(http, source, args.image_px, epochs=100_000)
                project_id = project["project_id"]
                run_id = _ok(http.post(f"/api/training/{project_id}/experiments/{project['experiment_id']}/run"))["run_id"]
                note(f"dataset imported and split; run {run_id} queued")
                placement = "shared: every process on every core"
                own_cpus = os.sched_getaffinity(0)
                if args.pin and (halves := split_cores()) is not None:
                    worker = _wait_worker(http, project_id, run_id)
                    pin_process_tree(worker, halves[0])
                    pin_process_tree(server.process.pid, halves[1])
                    pin_process_tree(os.getpid(), halves[1])
                    placement = f"pinned: training worker on cores {sorted(halves[0])}, server + load on {sorted(halves[1])}"
                try:
                    result = asyncio.run(measure(args, server, project, run_id))
                finally:
                    pin_process_tree(os.getpid(), own_cpus)  # leave the caller's process as it was
                result["cpu_placement"] = placement
        finally:
            if run_id is not None and project_id is not None:
                note("stopping the run and the server")
                with httpx.Client(base_url=server.url, timeout=30) as http:
                    stop_run(http, project_id, run_id, server.workspace)
            stop_server(server)
            note("done")
    return result


def _wait_worker(http: httpx.Client, project_id: str, run_id: str) -> int:
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while time.monotonic() < deadline:
        record = _ok(http.get(f"/api/training/{project_id}/runs/{run_id}"))
        if record.get("worker_pid"):
            return int(record["worker_pid"])
        time.sleep(0.2)
    raise RuntimeError("the run's worker did not start")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients (closed loop, no think time)")
    parser.add_argument("--sse", type=int, default=10, help="SSE subscribers following the training run")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds of quiet measurement before and after")
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--image-px", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="training worker on half the cores, server and load on the other half")
    parser.add_argument("--smoke", action="store_true", help="5 s, 5 clients, 2 subscribers, 2 s quiet windows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.sse, args.duration, args.baseline, args.warmup_epochs, args.images = 5, 2, 5.0, 2.0, 1, 80
    return args


def format_summary(report: dict[str, Any]) -> str:
    http, training, rss = report["http"], report["training"], report["server_rss"]["during_load"]
    lines = [
        f"load: {report['settings']['clients']} clients + {report['settings']['sse']} SSE subscribers for "
        f"{report['load_window_s']} s ({report['cpu_placement']})",
        f"errors: {report['errors']}",
        f"{'endpoint':<16}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}",
    ]
    for kind, row in [("all", http["overall"]), *http["by_endpoint"].items()]:
        lines.append(f"{kind:<16}{row['requests']:>10}{row['per_s']!s:>9}{row['p50_ms']!s:>9}{row['p95_ms']!s:>9}"
                     f"{row['p99_ms']!s:>9}{row['max_ms']!s:>9}")
    lines += [
        f"SSE events per subscriber: {report['sse']['events_per_subscriber']}",
        *(f"training images/s by {label}: before {training['before'][key]} ({training['before'][count]}), "
          f"during load {training['during_load'][key]} ({training['during_load'][count]}), "
          f"after {training['after'][key]} ({training['after'][count]}); "
          f"degradation {training[group]['degradation_pct']} %"
          for label, key, count, group in (("whole epochs", "images_per_s", "epochs", "by_epochs"),
                                           ("progress samples", "progress_images_per_s", "progress_samples", "by_progress"))),
        f"headline ({training['measured_by']}): degradation {training['degradation_pct']} % (target <= 10 %)",
        f"server RSS during load: {rss.get('start_mib')} -> {rss.get('end_mib')} MiB (max {rss.get('max_mib')}, "
        f"slope {rss.get('slope_mib_per_min')} MiB/min)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    report = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(format_summary(report))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
