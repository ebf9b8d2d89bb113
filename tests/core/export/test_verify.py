"""Verification arithmetic: exported vs PyTorch logits."""

from __future__ import annotations

import numpy as np

from modelyard.core.export.verify import FP16_TOLERANCE, FP32_TOLERANCE, compare_outputs, predict_in_chunks, tolerance_for


def test_identical_outputs_pass_with_full_agreement() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    result = compare_outputs(logits, logits.copy(), half=False)
    assert result == {"max_abs_diff": 0.0, "top1_agreement": 1.0, "images": 2, "passed": True, "tolerance": FP32_TOLERANCE * 3.0}


def test_difference_beyond_the_float32_tolerance_fails_even_with_same_top1() -> None:
    logits = np.array([[2.0, 1.0, 0.0]])
    result = compare_outputs(logits, logits + 1e-2, half=False)
    assert result["top1_agreement"] == 1.0
    assert result["passed"] is False
    assert result["max_abs_diff"] > result["tolerance"]


def test_half_precision_gets_the_looser_tolerance() -> None:
    logits = np.array([[0.5, 0.1]])
    assert compare_outputs(logits, logits + 5e-3, half=True)["passed"] is True
    assert compare_outputs(logits, logits + 5e-3, half=False)["passed"] is False
    assert tolerance_for(logits, half=True) == FP16_TOLERANCE


def test_any_top1_disagreement_fails() -> None:
    reference = np.array([[1.00001, 1.0], [0.0, 5.0]])
    exported = np.array([[1.0, 1.00001], [0.0, 5.0]])
    result = compare_outputs(reference, exported, half=True)
    assert result["top1_agreement"] == 0.5 and result["passed"] is False


def test_nan_outputs_or_a_wrong_shape_fail_with_a_reason() -> None:
    reference = np.ones((2, 3))
    nan = compare_outputs(reference, np.full((2, 3), np.nan), half=False)
    assert nan["passed"] is False and "NaN" in nan["problem"]
    shape = compare_outputs(reference, np.ones((2, 4)), half=False)
    assert shape["passed"] is False and "shape" in shape["problem"]


def test_predict_in_chunks_feeds_exactly_the_exported_batch_size() -> None:
    seen: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape[0])
        return batch.reshape(batch.shape[0], -1)[:, :2] * 2

    batch = np.arange(10 * 3, dtype=np.float32).reshape(10, 3, 1, 1)
    out = predict_in_chunks(predict, batch, chunk=4)
    assert seen == [4, 4, 4]  # the last 2 images padded to 4
    np.testing.assert_array_equal(out, batch.reshape(10, 3)[:, :2] * 2)
