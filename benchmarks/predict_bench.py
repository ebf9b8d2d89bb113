"""Prediction (issue 15): HTTP against in-process on one model, and dynamic batching under concurrent clients.

Set-up, shared by both rows: a workspace project of generated shape images
(``generate_shapes``, 4 classes, imported and split through the dataset
service), one ``resnet18`` run at 224 px (``pretrained: false``, nothing
downloaded) trained for real for one epoch by the run engine (``train_run``,
in this process), and its ``best`` checkpoint loaded with
``services.predictions.load`` (the ``CheckpointPredictor``: eval mode,
channels-last weights on a CPU, ``inference_mode``, behind the model's
``DynamicBatcher`` with the default settings). ``create_app(settings,
services)`` then serves that same ``services`` object from a real uvicorn
server on 127.0.0.1 (a thread of this process, as ``http_bench`` does), so
the HTTP requests and the in-process calls reach the very same loaded model.
The image sent is one generated 320x240 JPEG (a shape on a noisy
background, quality 90), decoded, validated and resized to the model's input
by the server on every request.

* ``predict_http_vs_inprocess_b1``: median latency of one image through
  ``POST /api/predict/{project}/models/{model}`` (multipart, one ``files``
  part and ``top_k``, one keep-alive ``httpx`` client, the answer read in
  full) against ``services.predictions.predict(...)`` with the same bytes and
  ``top_k`` in this process: the same upload validation, decode, resize,
  batcher (and its wait window) and forward pass, so the ratio is what HTTP,
  multipart parsing, the handler and the JSON envelope add. Interleaved one
  request at a time. Target: HTTP / in-process <= 1.3x.
* ``predict_batching_throughput``: images/s of 16 concurrent clients (16
  threads, each with its own keep-alive ``httpx`` client, each sending one
  image per request, back to back) against one client sending requests of 16
  images, both through HTTP to the same server and model, the same number of
  images per repeat, interleaved. The first side only approaches the second
  if the batcher merges the concurrent requests into full batches. Target:
  >= 0.7x. Each side's forward passes by batch size are reported beside it
  (see ``_BatchSizes``).

``--quick`` runs the same code on ``simple_cnn`` at 32 px with a few requests.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import Result, Side, interleave

#: the size of the image a client sends (width, height): a small photo, larger than the model's input
UPLOAD_SIZE = (320, 240)
CLIENTS = 16
TOP_K = 5
VAL_FRACTION = 0.25
HTTP_TIMEOUT_S = 120.0


@dataclass
class PredictSetup:
    """A trained run's checkpoint loaded for prediction, and the image the benchmark sends."""

    services: Any
    settings: Any
    project_id: str
    run_id: str
    model_id: str
    arch: str
    image_px: int
    image_name: str
    image: bytes
    train_images: int
    setup_s: float

    @property
    def model(self) -> Any:
        return self.services.predictions.cache.get(self.project_id, self.model_id)

    @property
    def url(self) -> str:
        return f"/api/predict/{self.project_id}/models/{self.model_id}"


def upload_jpeg(size: tuple[int, int] = UPLOAD_SIZE, seed: int = 0) -> bytes:
    """One generated photo-like JPEG of ``size``: a shape on a noisy background, quality 90."""
    import io
    import random

    from modelyard.core.sample_data import draw_shape

    width, height = size
    buffer = io.BytesIO()
    draw_shape("circle", max(width, height), random.Random(seed)).crop((0, 0, width, height)).save(
        buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def trained_setup(workdir: Path, arch: str, image_px: int, per_class: int, source_px: int = 64) -> PredictSetup:
    """Generate, import and split shapes, train ``arch`` for one epoch with the run engine, load its ``best``."""
    import torch

    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.jsonio import read_json
    from modelyard.core.sample_data import SHAPES, generate_shapes
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings
    from modelyard.core.training.run_folder import create_run_folder
    from modelyard.core.training.worker.engine import train_run

    started = time.perf_counter()
    source = workdir / "source"
    generate_shapes(source, per_class=per_class, size=source_px, seed=0)
    settings = Settings(workspace=workdir / "workspace", import_roots=[source])
    services = build_services(settings)
    project_id = services.projects.create("bench-predict").id
    services.datasets.import_local(project_id, str(source), format="imagefolder")
    services.splits.create(project_id, "bench", Ratios(train=1.0 - VAL_FRACTION, val=VAL_FRACTION), seed=0)
    config = {
        "model": {"architecture": arch, "pretrained": False},
        "data": {"image_size": [image_px, image_px], "batch_size": 16, "cache": "memory", "num_workers": 0},
        "training": {"max_epochs": 1, "early_stopping": None, "scheduler": {"name": "none"}, "precision": "32"},
        # the engine pins its threads (default 1) and restores them after: give it this process's count
        "hardware": {"devices": ["cpu"], "cpu_threads": torch.get_num_threads()},
    }
    experiment = services.experiments.create(project_id, "predict", config=config)
    frozen = services.experiments.run_config(project_id, experiment["id"])
    run_dir = create_run_folder(services.workspace, project_id, experiment["id"], frozen)
    status = train_run(services.workspace, run_dir, plugins=services.plugins)
    if status != "completed":
        raise RuntimeError(f"the benchmark run {run_dir.name} ended {status}: {read_json(run_dir / 'run.json')['error']}")
    train_images = read_json(run_dir / "reproducibility.json")["num_train_images"]
    model = services.predictions.load(project_id, run_id=run_dir.name, checkpoint="best", device="cpu")
    return PredictSetup(services=services, settings=settings, project_id=project_id, run_id=run_dir.name,
                        model_id=model["id"], arch=arch, image_px=image_px, image_name="photo.jpg",
                        image=upload_jpeg(), train_images=train_images, setup_s=time.perf_counter() - started)


# -- the two ways of asking ----------------------------------------------------------------------------


def _files(setup: PredictSetup, count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i:02d}-{setup.image_name}", setup.image, "image/jpeg")) for i in range(count)]


def http_predict(client: Any, setup: PredictSetup, count: int = 1) -> dict[str, Any]:
    """One multipart request of ``count`` copies of the image; the answer's ``data`` (a non-200 is an error)."""
    response = client.post(setup.url, files=_files(setup, count), data={"top_k": str(TOP_K)})
    if response.status_code != 200:
        raise RuntimeError(f"POST {setup.url} answered {response.status_code}: {response.text[:500]}")
    return response.json()["data"]


def _http_ms(client: Any, setup: PredictSetup) -> float:
    """Milliseconds for one single-image request, answer read in full (parsed after the clock stops)."""
    files, form = _files(setup, 1), {"top_k": str(TOP_K)}
    start = time.perf_counter()
    response = client.post(setup.url, files=files, data=form)
    elapsed = (time.perf_counter() - start) * 1000.0
    if response.status_code != 200 or "error" in response.json()["data"]["results"][0]:
        raise RuntimeError(f"POST {setup.url} answered {response.status_code}: {response.text[:500]}")
    return elapsed


def _inprocess_ms(setup: PredictSetup, options: Any) -> float:
    """Milliseconds for the same image through ``services.predictions.predict`` in this thread."""
    files = [(f"00-{setup.image_name}", setup.image)]
    start = time.perf_counter()
    answer = setup.services.predictions.predict(setup.project_id, setup.model_id, files, options)
    elapsed = (time.perf_counter() - start) * 1000.0
    if "error" in answer["results"][0]:
        raise RuntimeError(f"the in-process prediction failed: {answer['results'][0]['error']}")
    return elapsed


def _same_answer(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest confidence difference of two answers for the same image; an error when the classes differ."""
    pa, pb = a["results"][0]["predictions"], b["results"][0]["predictions"]
    if [p["class_id"] for p in pa] != [p["class_id"] for p in pb]:
        raise RuntimeError(f"HTTP and in-process answers differ: {pa} vs {pb}")
    return max(abs(x["confidence"] - y["confidence"]) for x, y in zip(pa, pb, strict=True))


class _BatchSizes:
    """The forward-pass batch sizes the model's batcher ran during one side's repeats.

    The batcher's ``run`` is wrapped while the side runs (one list append per
    forward pass, on both sides alike): its counters give only the mean, and a
    mean of 8 for 16 clients cannot tell full batches half the time from
    batches of 1 and 15 in turn.
    """

    def __init__(self, setup: PredictSetup) -> None:
        self.batcher = setup.model.batcher
        self.sizes: list[int] = []

    def counted(self, fn: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            inner = self.batcher.run

            def recorded(batch: Any) -> list[Any]:
                self.sizes.append(int(batch.shape[0]))
                return inner(batch)

            self.batcher.run = recorded
            try:
                return fn()
            finally:
                self.batcher.run = inner

        return run

    @property
    def mean_batch(self) -> float:
        return sum(self.sizes) / len(self.sizes) if self.sizes else 0.0

    @property
    def histogram(self) -> dict[int, int]:
        """Forward passes by batch size, largest batch first."""
        return dict(sorted(Counter(self.sizes).items(), reverse=True))

    def describe(self) -> str:
        return ", ".join(f"{count}x{size}" for size, count in self.histogram.items())


# -- the measurements ------------------------------------------------------------------------------------


def bench_http_vs_inprocess(setup: PredictSetup, base_url: str, repeats: int, warmup: int = 5) -> Result:
    """``predict_http_vs_inprocess_b1`` (see the module docstring), against a server already serving ``setup``."""
    import httpx

    from modelyard.core.prediction.service import PredictOptions

    options = PredictOptions(top_k=TOP_K)
    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S) as client:
        max_diff = _same_answer(http_predict(client, setup),
                                setup.services.predictions.predict(setup.project_id, setup.model_id,
                                                                   [("x.jpg", setup.image)], options))
        for _ in range(warmup):
            _http_ms(client, setup)
            _inprocess_ms(setup, options)
        http_counter, inprocess_counter = _BatchSizes(setup), _BatchSizes(setup)
        http_ms, inprocess_ms = interleave(http_counter.counted(lambda: _http_ms(client, setup)),
                                           inprocess_counter.counted(lambda: _inprocess_ms(setup, options)), repeats)
    return Result(
        id="predict_http_vs_inprocess_b1",
        compares=(f"one {UPLOAD_SIZE[0]}x{UPLOAD_SIZE[1]} JPEG ({len(setup.image)} B), top_k {TOP_K}: POST multipart "
                  f"to {setup.arch} {setup.image_px}px (1-epoch checkpoint, CPU) through uvicorn, keep-alive httpx "
                  "client, vs services.predictions.predict with the same bytes in-process (same decode, resize, "
                  "batcher and model); median latency, ms"),
        ours=Side("HTTP", "ms", http_ms), against=Side("in-process", "ms", inprocess_ms),
        ratio_kind="ours/against", target="<= 1.3x", target_value=1.3, higher_is_better=False,
        notes=(f"HTTP - in-process median {statistics.median(http_ms) - statistics.median(inprocess_ms):.2f} ms; "
               f"answers equal (max confidence difference {max_diff:.1e})"),
        extra={**_common(setup), "image_bytes": len(setup.image), "max_confidence_diff": max_diff,
               "http_mean_batch": http_counter.mean_batch, "inprocess_mean_batch": inprocess_counter.mean_batch},
    )


def bench_batching_throughput(setup: PredictSetup, base_url: str, repeats: int, requests_per_client: int,
                              clients: int = CLIENTS) -> Result:
    """``predict_batching_throughput`` (see the module docstring), against a server already serving ``setup``."""
    import httpx

    local = threading.local()
    made: list[httpx.Client] = []
    made_lock = threading.Lock()

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S)
            with made_lock:
                made.append(local.client)
        return local.client

    def one_client_loop(count: int) -> None:
        c = client()
        for _ in range(count):
            if len(http_predict(c, setup)["results"]) != 1:
                raise RuntimeError("a single-image request got a different number of answers")

    batched_client = httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S)
    images = clients * requests_per_client

    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="bench-client") as pool:

        def concurrent() -> float:
            start = time.perf_counter()
            for future in [pool.submit(one_client_loop, requests_per_client) for _ in range(clients)]:
                future.result()
            return images / (time.perf_counter() - start)

        def batched() -> float:
            start = time.perf_counter()
            for _ in range(requests_per_client):
                if len(http_predict(batched_client, setup, clients)["results"]) != clients:
                    raise RuntimeError(f"a {clients}-image request got a different number of answers")
            return images / (time.perf_counter() - start)

        try:
            for future in [pool.submit(one_client_loop, 1) for _ in range(clients)]:  # connect and warm every client
                future.result()
            http_predict(batched_client, setup, clients)
            concurrent_counter, batched_counter = _BatchSizes(setup), _BatchSizes(setup)
            concurrent_rates, batched_rates = interleave(concurrent_counter.counted(concurrent),
                                                         batched_counter.counted(batched), repeats)
        finally:
            batched_client.close()
            for c in made:
                c.close()
    return Result(
        id="predict_batching_throughput",
        compares=(f"{clients} concurrent clients (threads, own keep-alive httpx client each) sending one "
                  f"{UPLOAD_SIZE[0]}x{UPLOAD_SIZE[1]} JPEG per request vs one client sending requests of {clients} "
                  f"images, {images} images per repeat each, through uvicorn to the same {setup.arch} "
                  f"{setup.image_px}px checkpoint (CPU, dynamic batcher max {setup.settings.predict_max_batch}, "
                  f"wait {setup.settings.predict_batch_wait_ms:g} ms); images/s"),
        ours=Side(f"{clients} clients x 1 image", "img/s", concurrent_rates),
        against=Side(f"1 client x {clients} images", "img/s", batched_rates),
        ratio_kind="ours/against", target=">= 0.7x", target_value=0.7, higher_is_better=True,
        notes=(f"forward passes (count x images): concurrent {concurrent_counter.describe()}; "
               f"batched {batched_counter.describe()}"),
        extra={**_common(setup), "clients": clients, "requests_per_client": requests_per_client,
               "images_per_repeat": images, "concurrent_mean_batch": concurrent_counter.mean_batch,
               "batched_mean_batch": batched_counter.mean_batch,
               "concurrent_batch_sizes": concurrent_counter.histogram, "batched_batch_sizes": batched_counter.histogram},
    )


def _common(setup: PredictSetup) -> dict[str, Any]:
    import torch

    return {"arch": setup.arch, "image_px": setup.image_px, "upload_size": list(UPLOAD_SIZE),
            "train_images": setup.train_images, "setup_s": round(setup.setup_s, 2),
            "predict_max_batch": setup.settings.predict_max_batch,
            "predict_batch_wait_ms": setup.settings.predict_batch_wait_ms, "torch_threads": torch.get_num_threads(),
            "server": "uvicorn (h11), thread in this process; httpx keep-alive client(s)"}


_SETUPS: dict[tuple[Path, bool], PredictSetup] = {}


def shared_setup(workdir: Path, quick: bool) -> PredictSetup:
    """The trained, loaded model of this harness run: made by the first row that needs it, reused by the other."""
    key = (Path(workdir), quick)
    if key not in _SETUPS:
        folder = Path(workdir) / ("predict-quick" if quick else "predict")
        if quick:
            _SETUPS[key] = trained_setup(folder, "simple_cnn", 32, per_class=8, source_px=32)
        else:
            _SETUPS[key] = trained_setup(folder, "resnet18", 224, per_class=8, source_px=64)
    return _SETUPS[key]


def served(workdir: Path, quick: bool, measure: Callable[[PredictSetup, str], Result]) -> Result:
    """``measure(setup, base_url)`` with the shared model served by a fresh uvicorn server."""
    from benchmarks.http_bench import serving
    from modelyard.api.app import create_app

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would be timed too
    setup = shared_setup(workdir, quick)
    _ensure_loaded(setup)
    with serving(create_app(setup.settings, setup.services)) as base_url:
        return measure(setup, base_url)


def _ensure_loaded(setup: PredictSetup) -> None:
    """Load the checkpoint again if a previous server's shutdown unloaded it."""
    from modelyard.core.errors import ModelNotFoundError

    try:
        setup.model  # noqa: B018 - a lookup that raises when the model is gone
    except ModelNotFoundError:
        setup.model_id = setup.services.predictions.load(setup.project_id, run_id=setup.run_id, checkpoint="best",
                                                         device="cpu")["id"]
