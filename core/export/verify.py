"""Does the exported file compute what the PyTorch model computes? Measured on real images.

Both models get the same batch (real project images through the run's real
preprocessing). ``passed`` needs the same top-1 class for every image and a
maximum absolute logit difference within a tolerance relative to the logit
scale: ``base * max(1, max |reference logit|)`` with ``base`` 1e-4 for
float32 exports and 1e-2 for float16 ones. (Float32 kernels reorder sums, so
differences grow with the magnitude of the logits; a fixed absolute bound
would fail large-logit models for rounding alone.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

MAX_VERIFY_IMAGES = 64
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2


def tolerance_for(reference: np.ndarray, half: bool) -> float:
    """The allowed max abs difference for these reference logits (see the module docstring)."""
    base = FP16_TOLERANCE if half else FP32_TOLERANCE
    scale = float(np.max(np.abs(reference))) if reference.size else 1.0
    return base * max(1.0, scale)


def predict_in_chunks(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, chunk: int) -> np.ndarray:
    """Run ``predict`` over ``batch`` ``chunk`` images at a time (the shape the file was exported with).

    The last chunk is padded by repeating its final image, so a file with a
    static batch dimension still sees exactly the shape it was traced with.
    """
    chunk = max(1, int(chunk))
    outputs = []
    for start in range(0, batch.shape[0], chunk):
        part = batch[start : start + chunk]
        real = part.shape[0]
        if real < chunk:
            part = np.concatenate([part, np.repeat(part[-1:], chunk - real, axis=0)])
        outputs.append(np.asarray(predict(np.ascontiguousarray(part, dtype=np.float32)), dtype=np.float32)[:real])
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def compare_outputs(reference: np.ndarray, exported: np.ndarray, half: bool) -> dict[str, Any]:
    """``{max_abs_diff, top1_agreement, images, passed, tolerance}`` for two logit arrays."""
    reference = np.asarray(reference, dtype=np.float64)
    exported = np.asarray(exported, dtype=np.float64)
    tolerance = tolerance_for(reference, half)
    if reference.shape != exported.shape:
        return {
            "max_abs_diff": None,
            "top1_agreement": 0.0,
            "images": int(reference.shape[0]),
            "passed": False,
            "tolerance": tolerance,
            "problem": f"output shape {list(exported.shape)} differs from PyTorch's {list(reference.shape)}",
        }
    finite = bool(np.isfinite(exported).all())
    max_abs_diff = float(np.max(np.abs(reference - exported))) if reference.size and finite else (0.0 if finite else None)
    agreement = float(np.mean(reference.argmax(axis=1) == exported.argmax(axis=1))) if reference.size else 0.0
    result: dict[str, Any] = {
        "max_abs_diff": max_abs_diff,
        "top1_agreement": agreement,
        "images": int(reference.shape[0]),
        "passed": bool(finite and reference.size and agreement == 1.0 and max_abs_diff is not None and max_abs_diff <= tolerance),
        "tolerance": tolerance,
    }
    if not finite:
        result["problem"] = "the exported model produced NaN or infinite outputs"
    return result
