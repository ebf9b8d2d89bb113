"""A loaded model, whatever runs it: a run's checkpoint in PyTorch, or an export through its exporter's runner.

Both take the same ``uint8`` batch (``images.decode_upload``) and answer with
the task's per-image outputs in the form ``TaskModule.evaluate_batch`` gives
them, so one ``TaskRuntime.predictions`` turns either into the answer: the
checkpoint path *is* evaluation's path (the module's normalisation, channels-
last weights on a CPU, ``inference_mode``), and the export path is the one the
export's verification used (``Exporter.load_runner``).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError

if TYPE_CHECKING:
    import torch

    from ..records import DeploymentMetadata
    from ..training.checkpoints import TrainedModel
    from ..training.task_runtime import TaskRuntime
    from .images import DecodedImage


class Predictor(ABC):
    """What a loaded model is (task, classes, input) and how it answers for a batch of decoded images."""

    #: ``pytorch`` for a checkpoint, ``onnxruntime``/``torchscript``/... for an export
    runtime_name: str = ""

    def __init__(self, runtime: TaskRuntime, task: str, classes: list[str], input_size: tuple[int, int], channels: int,
                 device: str) -> None:
        self.runtime = runtime
        self.task = task
        self.classes = list(classes)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channels = int(channels)
        self.device = device
        #: one batch at a time per model (PyTorch modules and some runners are not re-entrant)
        self.lock = threading.Lock()
        #: the request options a model brings (an export's own ``score_threshold``); a request's own win
        self.default_options: dict[str, Any] = {}

    def pixels(self, image: DecodedImage) -> torch.Tensor:
        """The image's ``uint8`` input (a checkpoint adds its run's ``val`` augmentations)."""
        return image.pixels

    @abstractmethod
    def outputs(self, batch: torch.Tensor) -> list[Any]:
        """Per-image task outputs (``evaluate_batch``'s form) for a ``uint8`` NCHW batch."""

    @property
    @abstractmethod
    def memory_bytes(self) -> int:
        """What the model holds in memory (weights; an export's file size), for the cache's budget."""

    def predictions(self, output: Any, image: DecodedImage, options: dict[str, Any]) -> list[dict[str, Any]]:
        """One image's answer (``TaskRuntime.predictions``) in the pixels of the image as sent."""
        return self.runtime.predictions(output, self.classes, (image.width, image.height),
                                        {**self.default_options, **options, "input_size": self.input_size})


class CheckpointPredictor(Predictor):
    """A run's ``best``/``last`` checkpoint in its task's LightningModule, in eval mode."""

    runtime_name = "pytorch"

    def __init__(self, trained: TrainedModel, runtime: TaskRuntime, device: str) -> None:
        super().__init__(runtime, trained.task, trained.classes, trained.image_size, trained.channels, device)
        from ..training.augmentations import compose_augmentations

        self.trained = trained
        trained.use_fast_cpu_layout()  # as evaluation does: the same numbers, ~40 % faster on a CPU
        self.transform = compose_augmentations(trained.config.data.augmentations.val, trained.image_size,
                                               "config.data.augmentations.val")

    def pixels(self, image: DecodedImage) -> torch.Tensor:
        return image.pixels if self.transform is None else self.transform(image.pixels)

    def outputs(self, batch: torch.Tensor) -> list[Any]:
        import torch

        count = int(batch.shape[0])
        targets = self.runtime.target_store([], pad=count).batch(list(range(count)))  # padding: counted nowhere
        if isinstance(targets, torch.Tensor):
            targets = targets.to(self.trained.module.device)
        with self.lock, torch.inference_mode():
            return list(self.trained.module.evaluate_batch(self.trained.normalize(batch), targets))

    @property
    def memory_bytes(self) -> int:
        module = self.trained.module
        return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


class ExportPredictor(Predictor):
    """An export's model file through its exporter's runner (ONNX: onnxruntime on the CPU or a CUDA device)."""

    def __init__(self, path: Path, metadata: DeploymentMetadata, runtime: TaskRuntime, run: Callable[[Any], Any],
                 runtime_name: str, device: str, static_batch: int | None = None) -> None:
        super().__init__(runtime, metadata.task, metadata.classes, (metadata.input_size[0], metadata.input_size[1]),
                         metadata.channels, device)
        import torch

        self.path = path
        self.run = run
        self.runtime_name = runtime_name
        self.mean = torch.tensor(metadata.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(metadata.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.static_batch = static_batch
        self._size = path.stat().st_size
        # a detection graph keeps only boxes above the threshold it was exported with: answer at that one by default
        if metadata.export.get("score_threshold") is not None:
            self.default_options["score_threshold"] = float(metadata.export["score_threshold"])

    def outputs(self, batch: torch.Tensor) -> list[Any]:
        from ..training.worker.module import normalize_uint8

        array = normalize_uint8(batch, self.mean, self.std).numpy()
        chunk = self.static_batch or max(1, int(array.shape[0]))
        with self.lock:
            exported = self.runtime.exported_outputs(self.run, array, chunk)
        return self.runtime.prediction_outputs(exported)

    @property
    def memory_bytes(self) -> int:
        return self._size


def load_export_runner(exporter: Any, path: Path, options: dict[str, Any], device: str) -> Callable[[Any], Any]:
    """The exporter's runner for ``path`` on ``device``; a runner without a ``device`` parameter runs on the CPU only."""
    from ..plugin_checks import names_parameter

    if device == "cpu":
        return exporter.load_runner(path, options)
    if not names_parameter(exporter.load_runner, "device"):
        raise ValidationError(f"the '{exporter.id}' format runs on the CPU only; load it with device 'cpu'",
                              field="device")
    return exporter.load_runner(path, options, device=device)


def stack_pixels(predictor: Predictor, images: Sequence[DecodedImage]) -> torch.Tensor:
    """The batch a predictor takes for these images."""
    import torch

    return torch.stack([predictor.pixels(image) for image in images])
