"""Classification's targets (one class id per image) and module, as the training engine asks for them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from modelyard.core import ValidationError
from modelyard.core.datasets.document import split_items
from modelyard.core.training.task_runtime import Sample, TargetStore, TaskRuntime

from .module import ClassificationModule

#: The label of a padding item in a validation shard: never counted in any metric.
PAD_LABEL = -1


class LabelStore(TargetStore):
    """Class ids as one ``int64`` tensor: a batch of labels is a single ``index_select``."""

    def __init__(self, labels: Sequence[int], pad: int = 0) -> None:
        self.labels = torch.tensor(list(labels) + [PAD_LABEL] * pad, dtype=torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def item(self, index: int) -> torch.Tensor:
        return self.labels[index]

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        return self.labels.index_select(0, torch.as_tensor(indices, dtype=torch.int64))

    def collate(self, targets: Sequence[Any]) -> torch.Tensor:
        return torch.stack(list(targets))


class ClassificationRuntime(TaskRuntime):
    def check_dataset(self, dataset: dict[str, Any], field: str = "dataset") -> None:
        if len(dataset.get("classes") or []) < 2:
            raise ValidationError("the dataset needs at least two classes to train a classifier", field=f"{field}.classes")

    def samples(self, dataset: dict[str, Any], split_index: int, subset: str, image_size: Sequence[int]) -> list[Sample]:
        return list(split_items(dataset, split_index, subset))

    def target_store(self, targets: Sequence[Any], pad: int = 0) -> LabelStore:
        return LabelStore(targets, pad)

    def module_class(self) -> type[ClassificationModule]:
        return ClassificationModule

    def module_options(self, config: Any, classes: list[str], train_targets: Sequence[Any]) -> dict[str, Any]:
        """``class_weights`` ``n / (k * n_c)`` per class (1.0 for a class with no training image) when ``balanced``."""
        if config.training.loss.class_weights != "balanced":
            return {"class_weights": None}
        counts = [0] * len(classes)
        for label in train_targets:
            counts[label] += 1
        total = sum(counts)
        return {"class_weights": [total / (len(classes) * c) if c else 1.0 for c in counts]}
