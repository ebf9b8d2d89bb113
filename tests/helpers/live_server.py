"""A real uvicorn server for an app ``create_app`` built, in a thread on a free port (the CLI's server, in-process).

In-process so a test can hand it the same ``services`` its fixtures filled (a trained run, a dataset); the
HTTP, the lifespan (job queue, prediction threads) and the middleware are the real ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from litestar import Litestar

from tests.e2e.test_serve import free_port

STARTUP_TIMEOUT_S = 30.0


@contextmanager
def serve_in_thread(app: Litestar) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
