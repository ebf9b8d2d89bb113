"""Random-number state in every checkpoint, so a resumed run draws what the uninterrupted run would have.

``RngStateCallback`` saves the Python, NumPy, torch (CPU) and CUDA generator
states as plain data (lists, ints, floats, ``uint8`` tensors: they load with
``torch.load(weights_only=True)``) and puts them back right before the first
training step after a resume. That timing matters: Lightning restores
callback state before it builds the loaders and fetches the first batch, and
a state put back then would be consumed by whatever runs in between. The
data loading itself never draws from these generators (``sampling.py``),
so what dropout and other in-model randomness see is exactly continued.

Under DDP every rank is seeded alike and draws alike (equal batches), so rank
0's state, the one saved, is every rank's.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """The process's generator states, as plain data."""
    version, mt, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": [int(v) for v in mt], "gauss_next": gauss_next},
        "numpy": {"name": str(name), "keys": [int(v) for v in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``capture_rng_state`` returned (missing parts are left as they are)."""
    if python := state.get("python"):
        random.setstate((int(python["version"]), tuple(int(v) for v in python["state"]), python["gauss_next"]))
    if numpy := state.get("numpy"):
        np.random.set_state((numpy["name"], np.asarray(numpy["keys"], dtype=np.uint32), int(numpy["pos"]),
                             int(numpy["has_gauss"]), float(numpy["cached_gaussian"])))
    if (cpu := state.get("torch")) is not None:
        torch.set_rng_state(cpu)
    if (cuda := state.get("cuda")) and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda)[: torch.cuda.device_count()])


class RngStateCallback(L.Callback):
    """Saves the generator states with each checkpoint; restores them before the first step of a resumed fit."""

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": capture_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict.get("rng")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._to_restore is not None:
            state, self._to_restore = self._to_restore, None
            restore_rng_state(state)
