"""What a plugin registers: tasks, architectures, dataset importers and exporters.

These are plain, typed descriptions. A plugin builds them and hands them to
the registry it receives in its ``register_*`` hook; core code looks them up by
name and never imports a concrete plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:  # torch is heavy; plugin metadata must not require it at import time
    import numpy as np
    import torch
    from torch import nn

    from .training.task_runtime import TaskRuntime


#: The task of everything that does not say (architectures, importers and exporters written before tasks).
CLASSIFICATION = "classification"


@dataclass(frozen=True)
class Task:
    """A kind of problem a project solves (DESIGN section 10): the first choice a user makes.

    A project's ``task`` must name a registered one. Architectures, importers
    and exporters say which tasks they serve in their ``tasks``; listings
    filter by it.
    """

    id: str
    name: str
    description: str = ""
    #: the ``type`` of the annotations it reads from ``dataset.json`` (``label``, ``bbox``, ...)
    annotation_types: tuple[str, ...] = ()
    #: the epoch metrics its training module logs, each with the direction that is better (``min``/``max``)
    metrics: Mapping[str, Literal["min", "max"]] = field(default_factory=lambda: {"val/loss": "min"})
    #: what ``best.ckpt`` follows when early stopping is off (and early stopping's default)
    monitor: str = "val/loss"
    #: ``model.architecture`` of a config that does not name one
    default_architecture: str = ""
    #: merged over the core config defaults before a user's partial config (e.g. ``data.image_size``)
    config_defaults: Mapping[str, Any] = field(default_factory=dict)
    #: the torchvision transforms its augmentations may use (``None``: every transform of the core allow-list)
    augmentations: tuple[str, ...] | None = None
    #: builds the task's training, evaluation and export behaviour (imports torch; called only where that runs)
    runtime: Callable[[], TaskRuntime] | None = None
    #: reads an evaluation's ``results.npz`` into the task's results table (numpy only: the server pages it)
    load_results: Callable[[Path], Any] | None = None

    def monitor_mode(self, metric: str) -> Literal["min", "max"]:
        """Whether a lower or a higher value of ``metric`` is better (``min`` for an unknown ``*loss``)."""
        return self.metrics.get(metric) or ("min" if metric.endswith("loss") else "max")

    def monitors(self) -> list[str]:
        """The validation metrics a checkpoint or early stopping may follow."""
        return [name for name in self.metrics if name.startswith("val/")]


def tasks_of(entry: object) -> tuple[str, ...]:
    """The tasks an architecture, importer or exporter serves (``classification`` when it does not say)."""
    tasks = getattr(entry, "tasks", None)
    return tuple(tasks) if tasks else (CLASSIFICATION,)


class BuildArchitecture(Protocol):
    def __call__(
        self,
        num_classes: int,
        in_channels: int = 3,
        pretrained: bool = False,
        dropout: float = 0.0,
        **options: Any,
    ) -> nn.Module: ...


@dataclass(frozen=True)
class Architecture:
    """A model family: builds a plain ``nn.Module`` whose output is ``(batch, num_classes)`` logits.

    ``build(num_classes, in_channels=3, pretrained=False, dropout=0.0, **options)``
    must raise ``ValidationError`` for options it cannot honour (e.g. pretrained
    weights that do not exist).
    """

    name: str
    build: BuildArchitecture
    tasks: tuple[str, ...] = (CLASSIFICATION,)
    default_input_size: tuple[int, int] = (224, 224)
    has_pretrained: bool = False
    description: str = ""
    #: parameter count for 1000 classes, filled lazily by the API when not given
    num_parameters: int | None = None
    #: name of the sub-module that is the classifier head (used by ``freeze_backbone``)
    head_name: str | None = None


class DetectionNet(Protocol):
    """What an ``object_detection`` architecture's ``build`` returns (a plain ``nn.Module``).

    Images come in normalised like a classifier's (``[B, C, H, W]`` float, the
    task module applies mean/std; all of one size, ``image_size`` of the
    build options). Boxes are ``[x1, y1, x2, y2]`` in the input's pixels and
    class ids are ``0 .. num_classes - 1`` (no background id: a wrapper of a
    model that reserves one shifts it inside).

    - ``net(images, targets)`` in training mode, with ``targets`` a list of
      ``{"boxes": float [N, 4], "labels": int64 [N]}`` (``N`` may be 0), returns
      a dict of named loss tensors; the task sums them.
    - ``net(images)`` in eval mode returns one ``{"boxes", "scores", "labels"}``
      dict per image, highest score first, before any score threshold.
    - ``net.export_forward(images)`` for exactly one image returns the tuple
      ``(boxes [K, 4], scores [K], labels [K])`` with a dynamic ``K``: what the
      ONNX and TorchScript exports trace.
    """

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> Any: ...

    def export_forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class BoxLabel:
    """One object an importer found in an image (task ``object_detection``)."""

    class_name: str
    bbox: tuple[float, float, float, float]
    """``[x, y, w, h]`` in the file's pixels, top-left origin, as the source states it (staging clips it)."""


@dataclass(frozen=True)
class ImageRecord:
    """One image an importer found: where it is and what it is labelled."""

    path: Path
    """Absolute path of the file (inside the import root)."""
    source_path: str
    """Path relative to the import root, POSIX separators, as the user knows it."""
    label: str | None = None
    """Class name, or ``None`` for an unlabelled image."""
    subset: str | None = None
    """``train``/``val``/``test`` when the source already splits the data."""
    boxes: tuple[BoxLabel, ...] | None = None
    """The image's objects; ``None`` when the importer reads no boxes, ``()`` for a background image."""
    problem: str | None = None
    """Why this image cannot be imported (an unknown category id, a malformed label file): it is skipped with this reason."""


class DatasetImporter(Protocol):
    """Reads one dataset layout. ``detect`` must be cheap: ``format: auto`` asks every importer.

    An importer may also have ``tasks`` (the tasks whose annotations it reads); without it, ``classification``.
    """

    id: str
    name: str
    description: str

    def detect(self, root: Path) -> bool: ...

    def read(self, root: Path) -> Iterator[ImageRecord]: ...


#: The exported graph's outputs when a task does not say otherwise: classification's logits, batch dynamic.
DEFAULT_EXPORT_OUTPUTS: dict[str, dict[int, str]] = {"output": {0: "batch_size"}}
#: The input's dynamic axes when a task does not say otherwise (the batch).
DEFAULT_EXPORT_INPUT_AXES: dict[int, str] = {0: "batch_size"}


@dataclass(frozen=True)
class ExportMetadata:
    """What a deployed model needs to know to preprocess and to name its outputs.

    ``task``, ``outputs`` and ``input_axes`` describe the graph an exporter
    writes (its task's export signature, from the task's runtime): the output
    names in order, each with the axes whose size varies (axis index ->
    symbolic name), and the input's varying axes. Their defaults are
    classification's (one ``output`` of logits, a dynamic batch), so an
    exporter written before tasks keeps working for classification.
    """

    classes: list[str]
    input_size: tuple[int, int]
    mean: list[float]
    std: list[float]
    architecture: str
    run_id: str
    channels: int = 3
    #: task-specific facts to store in the file (``modelyard.<key>``): JSON scalars, e.g. ``score_threshold``
    extra: dict[str, Any] = field(default_factory=dict)
    task: str = CLASSIFICATION
    outputs: dict[str, dict[int, str]] = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_EXPORT_OUTPUTS.items()})
    input_axes: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_EXPORT_INPUT_AXES))

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    @property
    def default_signature(self) -> bool:
        """Whether the graph is classification's (one ``output``): the exporters' own axis options then apply."""
        return self.output_names == list(DEFAULT_EXPORT_OUTPUTS)


class ExportFunction(Protocol):
    def __call__(
        self, model: nn.Module, example_input: torch.Tensor, options: dict[str, Any], out_dir: Path, metadata: ExportMetadata
    ) -> Path: ...


class LoadRunner(Protocol):
    """Load an exported file and return ``predict(batch NCHW float32) -> outputs`` for verification.

    ``predict`` returns one array for a graph with one output (classification's
    logits) and a sequence of arrays, in the order of ``ExportMetadata.outputs``,
    for a graph with several (detection's boxes, scores, labels).
    """

    def __call__(self, path: Path, options: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]: ...


@dataclass(frozen=True)
class Exporter:
    """An export format. ``options_schema`` is a JSON schema object whose properties carry defaults."""

    id: str
    name: str
    extension: str
    options_schema: dict[str, Any]
    export: ExportFunction
    load_runner: LoadRunner
    description: str = ""
    #: the tasks whose models it exports
    tasks: tuple[str, ...] = (CLASSIFICATION,)
