"""Does the exported file compute what the PyTorch model computes? Measured on real images.

Both models get the same batch (real project images through the run's real
preprocessing) and are compared under the exporter's ``VerificationPolicy``
(``Exporter.verification``). Without one, modelyard's default: ``passed``
needs the same top-1 class for every image and a maximum absolute logit
difference within a tolerance relative to the logit scale, ``base * max(1,
max |reference logit|)`` with ``base`` 1e-4 for float32 exports and 1e-2 for
float16 ones (the ``fp16`` option). (Float32 kernels reorder sums, so
differences grow with the magnitude of the logits; a fixed absolute bound
would fail large-logit models for rounding alone.) A policy generalises it:
tolerance ``max(atol, rtol * max |reference logit|)``, top-1 agreement at
least ``min_top1_agreement``, and with ``lossy`` the tolerance is reported but
not applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelyardError
from ..plugin_types import VerificationPolicy

if TYPE_CHECKING:
    from ..plugin_types import Exporter

MAX_VERIFY_IMAGES = 64
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2
#: modelyard's rule for an exporter that declares no policy: float32 files, and files of the ``fp16`` option.
FP32_POLICY = VerificationPolicy(atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)
FP16_POLICY = VerificationPolicy(atol=FP16_TOLERANCE, rtol=FP16_TOLERANCE)


def default_policy(options: Mapping[str, Any]) -> VerificationPolicy:
    """The policy of an exporter that declares none: float32, or float16 with an ``fp16: true`` option."""
    return FP16_POLICY if options.get("fp16") is True else FP32_POLICY


def effective_policy(exporter: Exporter, options: Mapping[str, Any]) -> tuple[VerificationPolicy, str]:
    """The policy ``exporter``'s file is verified under for these (its own, resolved) options, and where it came from.

    ``("exporter")``: declared by the exporter (a policy, or its function of the
    options); ``("default")``: modelyard's ``default_policy``. The server's
    worker and ``modelyard.testing.check_exporter`` both ask here.
    """
    declared = exporter.verification
    if declared is None:
        return default_policy(options), "default"
    policy = declared if isinstance(declared, VerificationPolicy) else declared(dict(options))
    if not isinstance(policy, VerificationPolicy):
        raise ModelyardError(f"the {exporter.id} exporter's verification returned {type(policy).__name__}, "
                             "not a VerificationPolicy")
    return policy, "exporter"


def tolerance_for(reference: np.ndarray, half: bool = False, policy: VerificationPolicy | None = None) -> float:
    """The allowed max abs difference for these reference logits (see the module docstring)."""
    policy = policy or (FP16_POLICY if half else FP32_POLICY)
    scale = float(np.max(np.abs(reference))) if reference.size else 1.0
    return policy.tolerance(scale)


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


def compare_outputs(reference: np.ndarray, exported: np.ndarray, half: bool = False,
                    policy: VerificationPolicy | None = None) -> dict[str, Any]:
    """``{max_abs_diff, top1_agreement, images, passed, tolerance}`` for two logit arrays.

    Under ``policy`` when given (else the default for ``half``); a failure under
    a given policy says why in ``problem``.
    """
    reference = np.asarray(reference, dtype=np.float64)
    exported = np.asarray(exported, dtype=np.float64)
    tolerance = tolerance_for(reference, half, policy)
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
    applied = policy or FP32_POLICY
    agrees = agreement >= applied.min_top1_agreement - 1e-12
    close = applied.lossy or (max_abs_diff is not None and max_abs_diff <= tolerance)
    result: dict[str, Any] = {
        "max_abs_diff": max_abs_diff,
        "top1_agreement": agreement,
        "images": int(reference.shape[0]),
        "passed": bool(finite and reference.size and agrees and close),
        "tolerance": tolerance,
    }
    if not finite:
        result["problem"] = "the exported model produced NaN or infinite outputs"
    elif policy is not None and not result["passed"]:
        problems = []
        if not reference.size:
            problems.append("no image to verify with")
        if not agrees:
            problems.append(f"top-1 agreement {agreement:.4f} is below the policy's {applied.min_top1_agreement:g}")
        if not close:
            problems.append(f"max abs diff {max_abs_diff:.3g} exceeds the tolerance {tolerance:.3g}")
        result["problem"] = "; ".join(problems)
    return result
