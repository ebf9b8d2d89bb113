"""Dynamic batching: concurrent predict requests for one model share a forward pass.

Each model has one worker thread. A request's images wait at most
``wait_s`` for others to join them, up to ``max_batch`` images in all; then
the whole batch runs once and each request gets its own slice of the
outputs. A model busy with a batch gathers the next one meanwhile, so under
load the batches fill up by themselves and throughput approaches the model's
batched throughput. A request larger than ``max_batch`` runs on its own, in
chunks of ``max_batch``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass
class _Request:
    pixels: torch.Tensor
    future: Future[list[Any]] = field(default_factory=Future)


class DynamicBatcher:
    """Runs ``run(batch) -> per-image outputs`` on merged requests in one background thread."""

    def __init__(self, run: Callable[[torch.Tensor], list[Any]], max_batch: int = 16, wait_s: float = 0.002,
                 name: str = "predict") -> None:
        self.run = run
        self.max_batch = max(1, int(max_batch))
        self.wait_s = max(0.0, float(wait_s))
        self._pending: deque[_Request] = deque()
        self._condition = threading.Condition()
        self._closed = False
        #: forward passes and images run so far (the model listing shows them)
        self.batches_run = 0
        self.images_run = 0
        self._thread = threading.Thread(target=self._loop, name=f"modelyard-{name}", daemon=True)
        self._thread.start()

    def submit(self, pixels: torch.Tensor) -> Future[list[Any]]:
        """Queue a ``uint8`` batch of one request; the future holds its images' outputs in order."""
        request = _Request(pixels)
        with self._condition:
            if self._closed:
                raise RuntimeError("the model was unloaded")
            self._pending.append(request)
            self._condition.notify()
        return request.future

    def __call__(self, pixels: torch.Tensor) -> list[Any]:
        """Submit and wait."""
        return self.submit(pixels).result()

    def close(self) -> None:
        """Finish what is queued, then stop the thread (requests submitted later are refused)."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    # -- the worker thread -----------------------------------------------------------------
    def _next_batch(self) -> list[_Request] | None:
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self.wait_s
            while not self._closed and self._queued_images() < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._condition.wait(left)
            taken = [self._pending.popleft()]
            count = len(taken[0].pixels)
            while self._pending and count + len(self._pending[0].pixels) <= self.max_batch:
                request = self._pending.popleft()
                taken.append(request)
                count += len(request.pixels)
            return taken

    def _queued_images(self) -> int:
        return sum(len(request.pixels) for request in self._pending)

    def _loop(self) -> None:
        import torch

        while True:
            requests = self._next_batch()
            if requests is None:
                return
            live = [r for r in requests if r.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                batch = live[0].pixels if len(live) == 1 else torch.cat([r.pixels for r in live])
                outputs: list[Any] = []
                for start in range(0, len(batch), self.max_batch):
                    outputs.extend(self.run(batch[start:start + self.max_batch]))
                    self.batches_run += 1
                self.images_run += len(batch)
            except BaseException as exc:  # noqa: BLE001 - every waiting request learns why
                for request in live:
                    request.future.set_exception(exc)
                continue
            start = 0
            for request in live:
                request.future.set_result(outputs[start:start + len(request.pixels)])
                start += len(request.pixels)
