"""Classification's targets (one class id per image) and module, as the training engine asks for them.

A subset's labels are read from the dataset's index columns at once (``split_items``), not image by image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from modelyard.core import EvaluationOutcome, Sample, TaskRuntime, TensorStore, ValidationError
from modelyard.core.datasets.document import split_items
from modelyard.core.evaluation.metrics import compute_metrics
from modelyard.core.evaluation.results import ResultsTable

from .module import ClassificationModule

#: The label of a padding item in a validation shard: never counted in any metric.
PAD_LABEL = -1


def label_store(labels: Sequence[int], pad: int = 0) -> TensorStore:
    """Class ids as one ``int64`` tensor (padding items: ``PAD_LABEL``)."""
    return TensorStore(torch.tensor(list(labels), dtype=torch.int64), pad, PAD_LABEL)


class ClassificationRuntime(TaskRuntime):
    explainable = True  # the top class of each image has a score to explain

    def check_dataset(self, dataset: Mapping[str, Any], field: str = "dataset") -> None:
        if len(dataset.get("classes") or []) < 2:
            raise ValidationError("the dataset needs at least two classes to train a classifier", field=f"{field}.classes")

    def samples(self, dataset: Mapping[str, Any], split_index: int, subset: str, image_size: Sequence[int]) -> list[Sample]:
        """Each labelled image of the subset with its label's ``class_id`` (``CorruptDataError`` for an invalid one)."""
        return split_items(self.dataset_view(dataset), split_index, subset)

    def target_store(self, targets: Sequence[Any], pad: int = 0) -> TensorStore:
        return label_store(targets, pad)

    def flip_targets(self, targets: list[Any], flips: Sequence[tuple[int, torch.Tensor]],
                     image_size: Sequence[int]) -> list[Any]:
        """A class id does not move when its image is flipped."""
        return list(targets)

    def module_class(self) -> type[ClassificationModule]:
        return ClassificationModule

    def evaluation_samples(self, dataset: Mapping[str, Any], split_index: int, subset: str, image_size: Sequence[int],
                           model_classes: list[str]) -> tuple[list[Sample], int]:
        """Labels matched to the model's classes by name; images of a class the model does not know are skipped."""
        view = self.dataset_view(dataset)
        model_ids = {name: i for i, name in enumerate(model_classes)}
        to_model = [model_ids.get(str(name)) for name in view.index.classes]
        labelled = split_items(view, split_index, subset)
        samples: list[Sample] = [(filename, to_model[class_id]) for filename, class_id in labelled
                                 if to_model[class_id] is not None]
        return samples, len(labelled) - len(samples)

    def evaluate(self, items: list[tuple[str, str, Any]], outputs: list[Any], classes: list[str],
                 options: dict[str, Any]) -> EvaluationOutcome:
        """Accuracy, per-class and averaged precision/recall/F1, AP, confusion matrix and curves; one row per image."""
        import numpy as np

        probabilities = np.stack([probs for probs, _ in outputs]).astype(np.float32)
        losses = np.asarray([loss for _, loss in outputs], dtype=np.float32)
        targets = np.asarray([target for _, _, target in items], dtype=np.int64)
        metrics = compute_metrics(torch.from_numpy(probabilities), torch.from_numpy(targets),
                                  torch.from_numpy(losses), classes)
        table = ResultsTable.from_probabilities(classes, [name for name, _, _ in items], [s for _, s, _ in items],
                                                targets, probabilities, losses)
        return EvaluationOutcome(metrics=metrics, results=table)

    def predictions(self, output: Any, classes: list[str], source_size: tuple[int, int],
                    options: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``top_k`` (default 5) most probable classes, most probable first (ties: the lower class id)."""
        probabilities, _ = output
        top_k = max(1, min(int(options.get("top_k") or 5), len(classes)))
        order = sorted(range(len(classes)), key=lambda c: (-float(probabilities[c]), c))[:top_k]
        return [{"class_id": c, "class_name": classes[c], "confidence": float(probabilities[c])} for c in order]

    def module_options(self, config: Any, classes: list[str], train_targets: Sequence[Any]) -> dict[str, Any]:
        """``class_weights`` ``n / (k * n_c)`` per class (1.0 for a class with no training image) when ``balanced``."""
        if config.training.loss.class_weights != "balanced":
            return {"class_weights": None}
        counts = [0] * len(classes)
        for label in train_targets:
            counts[label] += 1
        total = sum(counts)
        return {"class_weights": [total / (len(classes) * c) if c else 1.0 for c in counts]}
