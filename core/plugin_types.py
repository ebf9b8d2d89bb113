"""What a plugin registers: tasks, architectures, dataset importers and exporters.

These are plain, typed descriptions. A plugin builds them and hands them to
the registry it receives in its ``register_*`` hook; core code looks them up by
name and never imports a concrete plugin.
"""

from __future__ import annotations

import math
import re
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
    weights that do not exist). A ``build`` that names a ``weights_path``
    parameter receives ``model.weights_path`` (resolved, or ``None``) and loads
    it itself, e.g. with ``load_backbone_weights``; otherwise core loads the file
    strictly after it (added in 0.3).
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
    #: the smallest ``(height, width)`` it takes: a smaller ``data.image_size`` is refused when an experiment is
    #: saved (422 on ``config.data.image_size``). Added in 0.3.
    min_input_size: tuple[int, int] | None = None
    #: both sides of ``data.image_size`` must be multiples of this (a ViT's patch size). Added in 0.3.
    input_size_multiple: int | None = None
    #: ``validate(config)``: raise ``ValidationError`` (field relative to the config, e.g. ``data.image_size``) for
    #: a config this architecture cannot train; called with the resolved config as plain data whenever an experiment
    #: is saved and when its run starts (a ``task`` keyword too, if named). Added in 0.3.
    validate: Callable[..., None] | None = None


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

    An importer may also have ``tasks`` (the tasks whose annotations it reads); without it, ``classification``,
    and ``validate(root)`` (added in 0.3): called before ``read`` when an import starts, it raises
    ``ValidationError`` for a folder it cannot import (a ``task`` keyword too, if named).
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

#: Prefix of every key modelyard stores in an exported file's key/value metadata (ONNX ``metadata_props``).
#: Added in 0.3.
METADATA_PREFIX = "modelyard."
#: ``ExportMetadata`` field -> the key it is stored under, for the facts every export carries. The
#: values of ``METADATA_JSON_FIELDS`` are JSON text, the others plain strings. ``ExportMetadata.extra``
#: adds ``METADATA_PREFIX + key`` for each of its keys (``modelyard.checkpoint``, detection's
#: ``modelyard.score_threshold``). Added in 0.3.
METADATA_KEYS: Mapping[str, str] = {
    name: METADATA_PREFIX + name
    for name in ("classes", "input_size", "mean", "std", "architecture", "run_id", "channels", "task")
}
#: The ``METADATA_KEYS`` whose values are JSON text (lists and numbers); the rest are plain strings.
METADATA_JSON_FIELDS: frozenset[str] = frozenset({"classes", "input_size", "mean", "std", "channels"})


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
    #: more facts to store in the file, each under ``METADATA_PREFIX + key`` as ``str(value)``: JSON scalars.
    #: Core puts the run's ``checkpoint`` (``best``/``last``) and the task's facts (``TaskRuntime.export_metadata``,
    #: detection's ``score_threshold``) here; a key of ``METADATA_KEYS`` never appears in it.
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

    def key_values(self) -> dict[str, str]:
        """The metadata as the key/value strings a file stores (``METADATA_KEYS`` then ``extra``). Added in 0.3.

        What the built-in ONNX exporter writes into ``metadata_props``; an
        exporter for another key/value format stores the same.
        """
        import json

        props = {}
        for name, key in METADATA_KEYS.items():
            value = getattr(self, name)
            if name in METADATA_JSON_FIELDS:
                props[key] = json.dumps(list(value) if isinstance(value, (list, tuple)) else value)
            else:
                props[key] = str(value)
        for key, value in self.extra.items():
            props.setdefault(METADATA_PREFIX + key, str(value))
        return props


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
class VerificationPolicy:
    """How an exported file is compared with PyTorch before the export counts as ``completed``. Added in 0.3.

    - ``atol``, ``rtol``: the allowed largest difference of an output is
      ``max(atol, rtol * scale)``, where ``scale`` is the largest absolute
      reference output (classification's logits; detection's scores, whose
      scale is 1). The defaults are modelyard's float32 rule, ``1e-4 x
      max(1, max |logit|)``; the built-in ``fp16`` option uses ``1e-2``.
    - ``min_top1_agreement`` (classification): the share of images whose top-1
      class must equal PyTorch's.
    - ``min_box_agreement`` (detection): the share of boxes that must agree:
      PyTorch's and the file's boxes above the score threshold are paired
      greedily by IoU (pairs need IoU >= 0.5, the detection comparison's
      matching threshold), and agreeing pairs (same label) are counted over
      pairs plus unpaired boxes (rounding near-ties excused).
    - ``lossy``: compare agreement only. The tolerances (``atol``/``rtol``,
      detection's IoU 0.99 and score difference) are reported but not
      applied; the agreement minimums and finite outputs still are. For
      quantised or otherwise approximate formats.
    """

    atol: float = 1e-4
    rtol: float = 1e-4
    min_top1_agreement: float = 1.0
    min_box_agreement: float = 1.0
    lossy: bool = False

    def __post_init__(self) -> None:
        for name in ("atol", "rtol", "min_top1_agreement", "min_box_agreement"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"VerificationPolicy.{name} must be a finite number >= 0, not {value!r}")
            if name.startswith("min_") and value > 1:
                raise ValueError(f"VerificationPolicy.{name} is a share of images or boxes (0 to 1), not {value!r}")
        if not isinstance(self.lossy, bool):
            raise ValueError(f"VerificationPolicy.lossy must be true or false, not {self.lossy!r}")

    def tolerance(self, scale: float) -> float:
        """The allowed largest absolute output difference for outputs of this scale (see the class docstring)."""
        return max(float(self.atol), float(self.rtol) * abs(float(scale)))

    def as_dict(self) -> dict[str, Any]:
        return {"atol": float(self.atol), "rtol": float(self.rtol), "min_top1_agreement": float(self.min_top1_agreement),
                "min_box_agreement": float(self.min_box_agreement), "lossy": self.lossy}


#: What ``Exporter.extension`` may be: one or more ``.part`` of ASCII letters, digits, ``_`` and ``-``
#: (``.onnx``, ``.int8.onnx``, ``.tar.gz``), at most ``MAX_EXTENSION_LENGTH`` characters. Added in 0.3.
EXTENSION_PATTERN = re.compile(r"(\.[A-Za-z0-9][A-Za-z0-9_-]*)+")
MAX_EXTENSION_LENGTH = 32


def extension_problem(extension: object) -> str | None:
    """Why ``extension`` cannot name an exported file (``None``: it can, and is used exactly as declared)."""
    if not isinstance(extension, str) or not extension:
        return f"extension must be a non-empty string like '.onnx', not {extension!r}"
    if len(extension) > MAX_EXTENSION_LENGTH:
        return f"extension {extension!r} is longer than {MAX_EXTENSION_LENGTH} characters"
    if not EXTENSION_PATTERN.fullmatch(extension):
        return (f"extension {extension!r} must start with '.' and hold only ASCII letters, digits, '_' and '-' "
                "between dots (e.g. '.onnx', '.int8.onnx'); no path separators, spaces or empty parts")
    return None


def exporter_problems(exporter: Exporter) -> list[str]:
    """What is wrong with an ``Exporter``'s declaration, checked when it registers (and by ``check_exporter``)."""
    problems = []
    wrong_extension = extension_problem(exporter.extension)
    if wrong_extension:
        problems.append(wrong_extension)
    if not (exporter.verification is None or isinstance(exporter.verification, VerificationPolicy)
            or callable(exporter.verification)):
        problems.append(f"verification must be a VerificationPolicy, a function of the options returning one, or "
                        f"None, not {type(exporter.verification).__name__}")
    if exporter.usage_snippet is not None and not callable(exporter.usage_snippet):
        problems.append("usage_snippet must be a function usage_snippet(model_file) -> str, or None")
    base = exporter.base_format
    if base is not None:
        if not isinstance(base, str) or not base:
            problems.append(f"base_format must be an export format id or None, not {base!r}")
        elif base == exporter.id:
            problems.append("base_format names the exporter itself")
        elif not accepts_keyword(exporter.export, "base_file"):
            problems.append("an exporter with a base_format receives the base file as export(..., base_file=path); "
                            "its export function takes no base_file argument")
    return problems


def accepts_keyword(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` can be called with the keyword argument ``name`` (named, or ``**kwargs``)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume it does
        return True
    return any(p.kind is p.VAR_KEYWORD or (p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
               for p in parameters)


#: ``usage_snippet(model_file) -> str``: Python lines that load the file named ``model_file`` (in the working
#: folder) and run it on ``x``, a float32 numpy array ``[C, H, W]`` already preprocessed, leaving ``outputs``: a list
#: of numpy arrays, one per output in graph order, for the batch of one image (``x[None]``).
UsageSnippet = Callable[[str], str]


@dataclass(frozen=True)
class Exporter:
    """An export format. ``options_schema`` is a JSON schema object whose properties carry defaults.

    ``extension`` names the saved file exactly as declared (``<architecture>-<run_id><extension>``;
    see ``extension_problem``). ``verification``, ``base_format`` and
    ``usage_snippet`` were added in 0.3 (docs/plugins.md, section 4).
    """

    id: str
    name: str
    extension: str
    options_schema: dict[str, Any]
    export: ExportFunction
    load_runner: LoadRunner
    description: str = ""
    #: the tasks whose models it exports
    tasks: tuple[str, ...] = (CLASSIFICATION,)
    #: how its files are verified: a policy, or ``policy(options)`` of the exporter's resolved options;
    #: ``None``: modelyard's defaults (float32 1e-4, 1e-2 with an ``fp16: true`` option, full agreement)
    verification: VerificationPolicy | Callable[[dict[str, Any]], VerificationPolicy] | None = None
    #: the id of the exporter whose file this one transforms: modelyard runs and verifies that one first and calls
    #: ``export(model, example_input, options, out_dir, metadata, base_file=path)``
    base_format: str | None = None
    #: the bundle README's lines that load and run the file (see ``UsageSnippet``); ``None``: a default per runtime
    usage_snippet: UsageSnippet | None = None
    #: ``validate(options)``: raise ``ValidationError`` (field relative to the options) for options this format cannot
    #: honour; called with the request's resolved options when an export is requested (``config``, the run's
    #: experiment config, and ``task`` keywords too, if named). Added in 0.3.
    validate: Callable[..., None] | None = None


# -- training extensions: callbacks, experiment loggers, losses, metrics (added in 0.3) ------------------------------


@dataclass(frozen=True)
class TrainingContext:
    """What a callback, logger, loss or metric plugin's ``build(options, context)`` knows about the run it serves.

    Added in 0.3.
    """

    #: the run folder (``config.yaml``, ``metrics.json``, ``checkpoints/``); write only inside it
    run_dir: Path
    run_id: str
    project_id: str
    project_name: str
    experiment_id: str
    #: the project's task id
    task: str
    #: the run's frozen experiment config as plain data (the document of ``config.yaml``)
    config: dict[str, Any]
    #: the model's classes, in class-id order
    class_names: list[str]
    #: the workspace folder (its ``mlruns`` is the MLflow logger's default store)
    workspace: Path
    #: this process's DDP rank and the number of processes (0 and 1 without DDP)
    rank: int = 0
    world_size: int = 1
    #: per-class loss weights when ``training.loss.class_weights`` is ``balanced`` (else ``None``)
    class_weights: list[float] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class SelectablePlugin:
    """What every plugin a config selects by name has (callbacks, loggers, losses, metrics). Added in 0.3."""

    name: str
    build: Callable[[dict[str, Any], TrainingContext], Any]
    options_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    description: str = ""
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    validate: Callable[..., None] | None = None


@dataclass(frozen=True)
class CallbackPlugin(SelectablePlugin):
    """A Lightning callback a config selects by name: ``callbacks: [{name: ..., options: {...}}]``.

    ``build(options, context)`` returns a ``lightning.pytorch.Callback``; it runs in
    every training process (each DDP rank), beside modelyard's own callbacks.
    ``options_schema`` is a JSON schema object whose properties carry defaults
    (the subset ``resolve_options`` checks); a config's options are checked
    against it when the experiment is saved, so ``build`` gets every option.
    ``requires`` names modules that must be importable (else a 422 at save time
    with ``install_hint``); ``validate(options)`` may refuse options the schema
    cannot express (``ValidationError``, field relative to the options; a
    ``roots`` keyword, the folders a path option may name or ``None`` for any,
    and ``task`` too, if named). Added in 0.3.
    """


@dataclass(frozen=True)
class LoggerPlugin(SelectablePlugin):
    """An experiment logger a config selects by name: ``logging: {<name>: {options}}``.

    ``build(options, context)`` returns a ``lightning.pytorch.loggers.Logger``,
    built in the process that owns the run files only (rank 0 under DDP), so
    it writes once. modelyard drives it: ``log_hyperparams`` with the flattened
    experiment config when training starts, ``log_metrics(record, step=epoch)``
    with each epoch's record of ``metrics.json``, then ``save()`` and
    ``finalize(status)`` (``success``, ``failed`` or ``killed`` for a stopped run).
    The other fields are as for ``CallbackPlugin``. Added in 0.3.
    """


@dataclass(frozen=True)
class Loss(SelectablePlugin):
    """A training loss a config selects by name: ``training.loss: {name: ..., options: {...}}``.

    ``build(options, context)`` returns a callable (usually an ``nn.Module``)
    ``loss(outputs, targets) -> scalar tensor``: the batch's loss, what
    backward runs on (classification: logits ``[N, C]`` and class ids ``[N]``).
    A task takes registered losses when at least one serves it (``tasks``).
    Options and ``requires`` as for ``CallbackPlugin``. Added in 0.3.
    """

    tasks: tuple[str, ...] = (CLASSIFICATION,)


@dataclass(frozen=True)
class Metric(SelectablePlugin):
    """A validation metric a config adds by name: ``training.metrics: [{name: ..., options: {...}}]``.

    ``build(options, context)`` returns a ``torchmetrics.Metric``; the task's
    module calls ``update(outputs, targets)`` on every validation batch
    (classification: logits ``[N, C]`` and class ids ``[N]``, padding dropped)
    and logs ``compute()`` as ``val/<name>`` each epoch: it is in
    ``metrics.json``, the run's metrics and every experiment logger.
    ``higher_is_better`` says which way is better. Added in 0.3.
    """

    tasks: tuple[str, ...] = (CLASSIFICATION,)
    higher_is_better: bool = True
