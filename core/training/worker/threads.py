"""CPU threads and determinism flags of a training process: set from the config, recorded, put back.

A CPU result depends on the number of intra-op threads (reductions split
differently), so ``hardware.cpu_threads`` fixes it (default 1) instead of
taking whatever the machine or ``OMP_NUM_THREADS`` gives; ``auto`` keeps
torch's default. ``OMP_NUM_THREADS`` is set alongside for the fit, so
Lightning's DDP launcher (which sets threads itself when that variable is
missing) and the DDP ranks it starts use the same number.
``runtime_record`` is what ``reproducibility.json`` stores about it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

OMP_ENV = "OMP_NUM_THREADS"


def resolve_threads(setting: int | str) -> int | None:
    """The intra-op thread count to set; ``None`` for ``auto`` (leave torch's default)."""
    return None if setting == "auto" else max(1, int(setting))


@contextmanager
def pinned_threads(setting: int | str) -> Iterator[None]:
    """Run the block with ``setting`` intra-op threads; the process's count and ``OMP_NUM_THREADS`` come back after."""
    threads = resolve_threads(setting)
    if threads is None:
        yield
        return
    before, env_before = torch.get_num_threads(), os.environ.get(OMP_ENV)
    torch.set_num_threads(threads)
    os.environ[OMP_ENV] = str(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if env_before is None:
            os.environ.pop(OMP_ENV, None)
        else:
            os.environ[OMP_ENV] = env_before


def runtime_record(setting: int | str) -> dict[str, Any]:
    """Threads and determinism flags in effect now (call it inside the fit's settings)."""
    import torch.utils.deterministic as torch_deterministic

    return {
        "threads": {"cpu_threads": setting, "intra_op": torch.get_num_threads(),
                    "inter_op": torch.get_num_interop_threads(), "omp_num_threads": os.environ.get(OMP_ENV)},
        "determinism": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "fill_uninitialized_memory": bool(torch_deterministic.fill_uninitialized_memory),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        },
    }
