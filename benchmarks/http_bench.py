"""Listing latency through real HTTP: ``GET /api/datasets/{id}/images`` at 100,000 images.

A real ``uvicorn.Server`` on 127.0.0.1 serves ``create_app(...)`` over a
synthesised 100,000-image ``dataset.json``. The yardstick is a bare Litestar
handler returning a constant 1 kB JSON, registered on the *same* app and
server, so routing, middleware (host check), the event loop, HTTP parsing and
the client's own cost are on both sides and cancel out of the ratio. One
``httpx`` keep-alive client sends the requests, alternating the two sides.

* ``list_images_100k``: every sort/filter combination is probed (its first,
  uncached request and a few repeats); the one with the slowest repeated page
  is then timed against the constant handler, interleaved. Target: <= 3x and
  under 50 ms. The slowest *uncached* first request (filtering and sorting
  100,000 images from scratch) is reported beside it.
* ``list_last_vs_first_page``: the last page against the first page of that
  same combination, interleaved. Target: <= 1.5x.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar, get

from benchmarks.datasets_bench import LIST_FILTERS, LIST_SORTS, NUM_LIST_IMAGES, _clear_lru, _synthetic_dataset
from benchmarks.harness import Result, Side, interleave

PAGE_SIZE = 50
CONSTANT_PATH = "/bench/constant"
#: About 1 kB once serialised (checked when the benchmark starts).
CONSTANT_BODY: dict[str, Any] = {"data": {"items": [{"id": f"item-{i:03d}", "value": i * 7, "label": "constant"}
                                                    for i in range(20)]}}
LATENCY_LIMIT_MS = 50.0
STARTUP_TIMEOUT_S = 30.0


@get(CONSTANT_PATH, operation_id="BenchConstant", include_in_schema=False)
async def constant_json() -> dict[str, Any]:
    """The yardstick: no I/O, no thread hop, a constant body."""
    return CONSTANT_BODY


@contextlib.contextmanager
def serving(app: Litestar) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server on 127.0.0.1 (a free port) in a thread; yields its base URL.

    uvicorn binds the port itself, as ``modelyard serve`` does: a socket made
    here with ``proto=0`` would make asyncio skip ``TCP_NODELAY`` and every
    response would wait ~40 ms for a delayed ACK.
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="bench-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the benchmark server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT_S)


def _get_ms(client: httpx.Client, url: str, params: dict[str, Any] | None = None) -> float:
    """Milliseconds for one request, response read in full; a non-200 answer is an error, not a number."""
    start = time.perf_counter()
    response = client.get(url, params=params)
    elapsed = (time.perf_counter() - start) * 1000.0
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} {params} answered {response.status_code}: {response.text[:300]}")
    return elapsed


def bench_list_http(workdir: Path, images: int = NUM_LIST_IMAGES, repeats: int = 200, probes: int = 7) -> list[Result]:
    """``list_images_100k`` and ``list_last_vs_first_page`` (see the module docstring)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would be timed too
    from modelyard.api.app import create_app
    from modelyard.core.jsonio import atomic_write_json
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    settings = Settings(workspace=Path(workdir) / "http_ws")
    services = build_services(settings)
    project = services.projects.create("bench-list").id
    atomic_write_json(services.workspace.dataset_json(project), _synthetic_dataset(images))
    app = create_app(settings, services)
    app.register(constant_json)
    url = f"/api/datasets/{project}/images"
    with serving(app) as base_url, httpx.Client(base_url=base_url, timeout=60.0) as client:
        constant_bytes = len(client.get(CONSTANT_PATH).content)
        index_build_ms = _get_ms(client, url, {"page": 1, "page_size": PAGE_SIZE})  # parses dataset.json, builds the index
        probed = []
        for (sort_by, order), (filter_name, filters) in ((s, f) for s in LIST_SORTS for f in LIST_FILTERS.items()):
            params = {"page": 1, "page_size": PAGE_SIZE, "sort_by": sort_by, "sort_order": order, **filters}
            _clear_lru(services, project)
            uncached = _get_ms(client, url, params)
            repeated = statistics.median(_get_ms(client, url, params) for _ in range(probes))
            probed.append({"sort_by": sort_by, "sort_order": order, "filter": filter_name, "params": params,
                           "uncached_first_ms": uncached, "repeat_median_ms": repeated})
        worst = max(probed, key=lambda row: row["repeat_median_ms"])
        worst_uncached = max(probed, key=lambda row: row["uncached_first_ms"])
        first_params = worst["params"]
        body = client.get(url, params=first_params).json()["data"]
        last_params = {**first_params, "page": max(1, body["pages"])}
        list_ms, constant_ms = interleave(lambda: _get_ms(client, url, first_params),
                                          lambda: _get_ms(client, CONSTANT_PATH), repeats)
        last_ms, first_ms = interleave(lambda: _get_ms(client, url, last_params),
                                       lambda: _get_ms(client, url, first_params), repeats)
    combination = f"sort_by={worst['sort_by']} sort_order={worst['sort_order']} filter={worst['filter']}"
    uncached_note = (f"slowest uncached first request {worst_uncached['uncached_first_ms']:.1f} ms "
                     f"({worst_uncached['sort_by']} {worst_uncached['sort_order']} {worst_uncached['filter']}; "
                     f"< {LATENCY_LIMIT_MS:g} ms: {'yes' if worst_uncached['uncached_first_ms'] < LATENCY_LIMIT_MS else 'NO'})")
    common = {"images": images, "page_size": PAGE_SIZE, "worst_combination": {k: worst[k] for k in ("sort_by", "sort_order", "filter")},
              "matching_images": body["total"], "server": "uvicorn (h11), thread in this process; httpx keep-alive client"}
    listing = Result(
        id="list_images_100k",
        compares=(f"GET page of {PAGE_SIZE} of {images} images through uvicorn, slowest repeated sort/filter combination "
                  f"({combination}), vs a bare Litestar handler returning a constant {constant_bytes} B JSON on the same server; "
                  "median latency, ms"),
        ours=Side("list images page", "ms", list_ms), against=Side("constant 1 kB handler", "ms", constant_ms),
        ratio_kind="ours/against", target=f"<= 3x, < {LATENCY_LIMIT_MS:g} ms", target_value=3.0, higher_is_better=False,
        ours_limit=LATENCY_LIMIT_MS, notes=uncached_note,
        extra={**common, "constant_body_bytes": constant_bytes, "index_build_first_request_ms": index_build_ms,
               "worst_uncached": {k: worst_uncached[k] for k in ("sort_by", "sort_order", "filter", "uncached_first_ms")},
               "probes": [{k: v for k, v in row.items() if k != "params"} for row in probed]},
    )
    pages = Result(
        id="list_last_vs_first_page",
        compares=(f"GET last page (page {last_params['page']}) vs first page of {PAGE_SIZE}, {images} images, {combination}, "
                  "through uvicorn; median latency, ms"),
        ours=Side("last page", "ms", last_ms), against=Side("first page", "ms", first_ms),
        ratio_kind="ours/against", target="<= 1.5x", target_value=1.5, higher_is_better=False,
        extra={**common, "last_page": last_params["page"]},
    )
    return [listing, pages]
