"""Per-image results of an evaluation, stored as one compact columnar file.

One ``results.npz`` per evaluation (numpy arrays, no pickle: strings are
fixed-width unicode arrays) instead of one JSON object per image: 100,000
results load in milliseconds and the index can sort whole columns at once.
``ResultsTable`` is the table of single-label tasks (classification); a task
with other results (detection) brings its own table with the same reading
interface (``filenames``, ``filename_order``, ``classes``, ``correct``,
``true_class_mask``, ``predicted_class_mask``, ``sort_values``, ``row``,
``save``, ``load``) and names its loader in ``Task.load_results``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptDataError
from ..jsonio import atomic_write_bytes

RESULTS_FILE = "results.npz"
TOP_K = 5
_COLUMNS = ("classes", "filenames", "subsets", "ground_truth", "predicted", "confidence", "loss", "topk_ids", "topk_probs")


@dataclass
class ResultsTable:
    """Column arrays of the per-image results (row ``i`` is one image)."""

    classes: list[str]
    filenames: np.ndarray  # (N,) str
    subsets: np.ndarray  # (N,) str: train / val / test
    ground_truth: np.ndarray  # (N,) int32 class id
    predicted: np.ndarray  # (N,) int32 class id
    confidence: np.ndarray  # (N,) float32 probability of the predicted class
    loss: np.ndarray  # (N,) float32 cross-entropy on the true class
    topk_ids: np.ndarray  # (N, k) int32, most probable first
    topk_probs: np.ndarray  # (N, k) float32
    #: rows in filename order, stored with the file so the first page needs no string sort
    filename_order: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.filenames.shape[0])

    @property
    def correct(self) -> np.ndarray:
        return self.ground_truth == self.predicted

    # -- what the results index asks of any task's table ---------------------------------------
    def true_class_mask(self, class_id: int) -> np.ndarray:
        """Rows whose ground truth is ``class_id``."""
        return self.ground_truth == class_id

    def predicted_class_mask(self, class_id: int) -> np.ndarray:
        """Rows predicted as ``class_id``."""
        return self.predicted == class_id

    def sort_values(self, key: str) -> np.ndarray:
        """``confidence`` of the prediction or ``error`` (cross-entropy on the true class), one per row."""
        return self.confidence if key == "confidence" else self.loss

    @classmethod
    def from_probabilities(
        cls,
        classes: list[str],
        filenames: list[str],
        subsets: list[str],
        targets: np.ndarray,
        probabilities: np.ndarray,
        losses: np.ndarray,
    ) -> ResultsTable:
        """Build the table from the model's softmax output (``(N, C)``) and the per-image losses."""
        probabilities = np.asarray(probabilities, dtype=np.float32)
        k = min(TOP_K, probabilities.shape[1])
        # argsort of the negated row, stable, so ties keep the lower class id first (as torch.argmax does)
        topk_ids = np.argsort(-probabilities, axis=1, kind="stable")[:, :k].astype(np.int32)
        topk_probs = np.take_along_axis(probabilities, topk_ids, axis=1)
        return cls(
            classes=list(classes),
            filenames=np.asarray(filenames, dtype=str),
            subsets=np.asarray(subsets, dtype=str),
            ground_truth=np.asarray(targets, dtype=np.int32),
            predicted=topk_ids[:, 0].copy(),
            confidence=topk_probs[:, 0].copy(),
            loss=np.asarray(losses, dtype=np.float32),
            topk_ids=topk_ids,
            topk_probs=topk_probs.astype(np.float32),
        )

    def row(self, i: int) -> dict[str, Any]:
        """Row ``i`` in the API shape (reference section 5, DESIGN section 6)."""
        gt, pred = int(self.ground_truth[i]), int(self.predicted[i])
        return {
            "filename": str(self.filenames[i]),
            "subset": str(self.subsets[i]),
            "ground_truth": {"class_id": gt, "class_name": self.classes[gt]},
            "prediction": {"class_id": pred, "class_name": self.classes[pred], "confidence": float(self.confidence[i])},
            "correct": gt == pred,
            "probabilities": [
                {"class_id": int(c), "class_name": self.classes[int(c)], "probability": float(p)}
                for c, p in zip(self.topk_ids[i], self.topk_probs[i], strict=True)
            ],
            "loss": float(self.loss[i]),
        }

    def save(self, path: Path) -> None:
        """Write the table atomically (a reader never sees half a file)."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            classes=np.asarray(self.classes, dtype=str),
            filenames=self.filenames,
            subsets=self.subsets,
            ground_truth=self.ground_truth,
            predicted=self.predicted,
            confidence=self.confidence,
            loss=self.loss,
            topk_ids=self.topk_ids,
            topk_probs=self.topk_probs,
            filename_order=np.argsort(self.filenames, kind="stable").astype(np.int64),
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> ResultsTable:
        """Read a table written by ``save`` (never unpickles anything)."""
        arrays, order = read_result_columns(path, _COLUMNS)
        classes = [str(c) for c in arrays.pop("classes").tolist()]
        table = cls(classes=classes, **arrays)
        if not table._consistent():
            raise CorruptDataError(f"{path.name} is corrupt (inconsistent columns)", {"file": path.name})
        if order is not None and _is_index_array(order, len(table)):
            table.filename_order = order
        return table

    def _consistent(self) -> bool:
        """Every column has one row per image and every class id names a class (so a row can always be built)."""
        n, c = len(self), len(self.classes)
        columns = (self.subsets, self.ground_truth, self.predicted, self.confidence, self.loss)
        if any(col.shape != (n,) for col in columns) or self.topk_ids.shape != self.topk_probs.shape:
            return False
        if self.topk_ids.ndim != 2 or self.topk_ids.shape[0] != n:
            return False
        return all(_is_index_array(ids, c) for ids in (self.ground_truth, self.predicted, self.topk_ids))


def read_result_columns(path: Path, columns: tuple[str, ...]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The named arrays of a results file and its stored filename order (``None`` when absent).

    Never unpickles; a missing column or an unreadable file is ``CorruptDataError`` naming the file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in columns}
            order = data["filename_order"] if "filename_order" in data.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptDataError(f"{path.name} is corrupt and cannot be read", {"file": path.name}) from exc
    return arrays, order


def _is_index_array(values: np.ndarray, bound: int) -> bool:
    if values.size == 0:
        return True
    return bool(np.issubdtype(values.dtype, np.integer) and values.min() >= 0 and values.max() < bound)
