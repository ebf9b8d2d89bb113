"""The experiment config (DESIGN section 5): one document for the API body, ``experiment.json`` and YAML.

The schema is a tree of msgspec Structs that reject unknown fields. A client
sends a *partial* document; ``resolve_config`` deep-merges it onto the task's
defaults (or onto the stored config, for a PATCH), converts it and checks what
the types cannot: the architecture exists, the split exists, augmentations are
allowed and constructible, devices exist. Every error names the field path
(``config.training.optimizer.lr``) so a client can point at it.

Configs only ever *name* registry entries; nothing is built from an import
string, so a request cannot make the server run arbitrary code.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from ..errors import ValidationError
from ..plugin_types import Task, tasks_of
from ..registry import ArchitectureRegistry
from .augmentations import ALLOWED as AUGMENTATIONS

# -- the schema ----------------------------------------------------------------

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Side = Annotated[int, msgspec.Meta(ge=8, le=4096)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
SCHEDULERS: tuple[str, ...] = ("none", "cosine", "step", "multistep", "onecycle")
PRECISIONS: tuple[str, ...] = ("auto", "32", "16-mixed", "bf16-mixed")
_DEVICE_RE = re.compile(r"^(cpu|gpu:[0-9]{1,3})$")
#: ``hardware.cpu_threads`` when a config leaves it out: CPU results then do not depend on the machine's cores.
DEFAULT_CPU_THREADS = 1


#: in the schema as an enum, so a client (the web UI's form) can offer the allow-list; ``augmentations.py`` checks it
#: and names the allowed ones in its error
AugmentationName = Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(AUGMENTATIONS)})]


class Augmentation(msgspec.Struct, forbid_unknown_fields=True):
    """A ``torchvision.transforms.v2`` class from the allow-list and its keyword arguments."""

    name: AugmentationName
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class Augmentations(msgspec.Struct, forbid_unknown_fields=True):
    train: list[Augmentation] = msgspec.field(default_factory=list)
    val: list[Augmentation] = msgspec.field(default_factory=list)


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    architecture: str = "resnet18"
    pretrained: bool = False
    weights_path: str | None = None
    freeze_backbone: bool = False
    dropout: Unit = 0.0


class DataConfig(msgspec.Struct, forbid_unknown_fields=True):
    #: ``[height, width]`` in pixels.
    image_size: tuple[Side, Side] = (64, 64)
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    num_workers: Literal["auto"] | Annotated[int, msgspec.Meta(ge=0, le=64)] = "auto"
    #: ``auto`` keeps resized, decoded images in memory when they fit ``cache_max_mb``.
    cache: Literal["auto", "none", "memory"] = "auto"
    cache_max_mb: Annotated[int, msgspec.Meta(ge=0, le=1_048_576)] = 2048
    channels: Literal[3, 1] = 3
    augmentations: Augmentations = msgspec.field(default_factory=Augmentations)


class OptimizerConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: Annotated[float, msgspec.Meta(gt=0.0, le=10.0)] = 0.001
    weight_decay: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0001
    #: SGD momentum (ignored by adam/adamw).
    momentum: Unit = 0.9


class SchedulerConfig(msgspec.Struct, forbid_unknown_fields=True):
    name: Literal["none", "cosine", "step", "multistep", "onecycle"] = "cosine"
    #: epochs of linear warm-up from ~0 to ``lr`` before the schedule proper.
    warmup_epochs: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: ``step``: multiply the lr by ``gamma`` every ``step_size`` epochs.
    step_size: PositiveInt = 10
    gamma: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.1
    #: ``multistep``: epochs at which the lr is multiplied by ``gamma``.
    milestones: list[PositiveInt] = msgspec.field(default_factory=list)


class PluginChoice(msgspec.Struct, forbid_unknown_fields=True):
    """A registered callback or metric chosen by name, with its options (checked against its options schema)."""

    name: str
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class LossConfig(msgspec.Struct, forbid_unknown_fields=True):
    #: a registered loss serving the project's task (``register_losses``); classification's own: ``cross_entropy``
    name: str = "cross_entropy"
    #: the loss's options, checked against its options schema (``cross_entropy`` takes none)
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    label_smoothing: Unit = 0.0
    #: ``balanced`` weights each class by ``n_images / (n_classes * n_class_images)`` on the train subset.
    class_weights: Literal["none", "balanced"] = "none"


class EarlyStoppingConfig(msgspec.Struct, forbid_unknown_fields=True):
    patience: PositiveInt = 10
    #: a validation metric the project's task logs (classification: ``val/loss``, ``val/acc``, ``val/f1``)
    monitor: str = "val/loss"
    min_delta: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0


class TrainingConfig(msgspec.Struct, forbid_unknown_fields=True):
    max_epochs: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 20
    optimizer: OptimizerConfig = msgspec.field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    loss: LossConfig = msgspec.field(default_factory=LossConfig)
    #: gradient accumulation: one optimizer step every ``batch_multiplier`` batches.
    batch_multiplier: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    #: ``null`` disables early stopping (best.ckpt then follows ``val/loss``).
    early_stopping: EarlyStoppingConfig | None = msgspec.field(default_factory=EarlyStoppingConfig)
    precision: Literal["auto", "32", "16-mixed", "bf16-mixed", 32] = "auto"
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 42
    #: registered validation metrics (``register_metrics``) logged as ``val/<name>`` besides the task's own
    metrics: list[PluginChoice] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.precision == 32:  # YAML writes `precision: 32` as a number
            self.precision = "32"


class HardwareConfig(msgspec.Struct, forbid_unknown_fields=True):
    #: ids from ``/api/system/devices``; several ``gpu:N`` train with DDP across exactly those.
    devices: Annotated[list[str], msgspec.Meta(min_length=1)] = msgspec.field(default_factory=lambda: ["cpu"])
    strategy: Literal["auto", "ddp"] = "auto"
    #: CPU only: more than 1 runs DDP over that many processes (gloo backend).
    num_processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    #: torch intra-op threads of each training process. A fixed number (default 1), not the machine's core
    #: count, so the same file gives the same metrics on any machine; ``auto`` leaves torch's default.
    cpu_threads: Literal["auto"] | Annotated[int, msgspec.Meta(ge=1, le=256)] = DEFAULT_CPU_THREADS
    #: ``ray``: train one run with DDP across ``num_workers`` Ray Train workers of the server's Ray cluster, each
    #: with ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs (docs/cluster.md); ``devices`` is then unused.
    executor: Literal["local", "ray"] = "local"
    num_workers: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    gpus_per_worker: Annotated[int, msgspec.Meta(ge=0, le=16)] = 0
    cpus_per_worker: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1


class ExperimentConfig(msgspec.Struct, forbid_unknown_fields=True):
    split_index: Annotated[int, msgspec.Meta(ge=0)] = 0
    model: ModelConfig = msgspec.field(default_factory=ModelConfig)
    data: DataConfig = msgspec.field(default_factory=DataConfig)
    training: TrainingConfig = msgspec.field(default_factory=TrainingConfig)
    hardware: HardwareConfig = msgspec.field(default_factory=HardwareConfig)
    #: experiment loggers by registered name with their options (``tensorboard``, ``mlflow``); ``null`` switches one
    #: off. metrics.json and events.jsonl are always written.
    logging: dict[str, dict[str, Any] | None] = msgspec.field(default_factory=dict)
    #: registered Lightning callbacks (``register_callbacks``), in order
    callbacks: list[PluginChoice] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        # a PATCH deep-merges mappings, so ``logging: {mlflow: null}`` is how one is removed: forget it here
        self.logging = {name: options for name, options in self.logging.items() if options is not None}


# -- helpers over a resolved config ------------------------------------------


def monitor_of(config: ExperimentConfig, task: Task | None = None) -> str:
    """The metric best.ckpt (and early stopping) follows: early stopping's, else the task's (``val/loss`` without one)."""
    if config.training.early_stopping:
        return config.training.early_stopping.monitor
    return task.monitor if task is not None else "val/loss"


def config_to_dict(config: ExperimentConfig) -> dict[str, Any]:
    """Plain data (lists, dicts, str, numbers) for JSON, YAML and checkpoint hyperparameters."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    return data


def config_hash(config: ExperimentConfig) -> str:
    """sha256 of the canonical JSON of the config (recorded for reproducibility)."""
    text = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dump_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)


# -- merging and resolving ----------------------------------------------------


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` onto ``base``: mappings merge recursively, anything else (lists, null) replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


#: The schema nests 6 levels at most (config.data.augmentations.train[0].params.value); deeper input is refused
#: before it is merged or converted, so a hostile document cannot exhaust the recursion limit.
MAX_DEPTH = 12


def check_depth(document: Any, root: str = "config", max_depth: int = MAX_DEPTH) -> None:
    """Refuse documents nested deeper than ``max_depth`` (iteratively: no recursion to exhaust)."""
    stack: list[tuple[Any, str, int]] = [(document, root, 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > max_depth:
            raise ValidationError(f"{path}: nested too deeply (more than {max_depth} levels)", field=path)
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}", depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))


def task_defaults(task: Task | None = None) -> dict[str, Any]:
    """The defaults a partial config is merged onto: core's, with the task's architecture, monitor and overrides."""
    defaults = config_to_dict(ExperimentConfig())
    if task is None:
        return defaults
    if task.default_architecture:
        defaults["model"]["architecture"] = task.default_architecture
    defaults["training"]["early_stopping"]["monitor"] = task.monitor
    return deep_merge(defaults, dict(task.config_defaults))


_AT_PATH = re.compile(r" - at `\$(.*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")


def _msgspec_error(exc: msgspec.ValidationError, root: str) -> ValidationError:
    """Turn msgspec's ``... - at `$.a.b[0]``` into a ``ValidationError`` naming ``config.a.b[0]``."""
    text = str(exc)
    path = ""
    if match := _AT_PATH.search(text):
        path = match.group(1)
        text = text[: match.start()]
    if unknown := _UNKNOWN.search(text):
        path = f"{path}.{unknown.group(1)}"
    return ValidationError(f"{root}{path}: {text}", field=f"{root}{path}")


def parse_config(document: dict[str, Any], root: str = "config") -> ExperimentConfig:
    """Convert a full document to the Struct tree (types and ranges only, no registry checks)."""
    if not isinstance(document, dict):
        raise ValidationError(f"{root} must be an object", field=root)
    try:
        return msgspec.convert(document, ExperimentConfig)
    except msgspec.ValidationError as exc:
        raise _msgspec_error(exc, root) from None


def resolve_config(
    partial: dict[str, Any] | None,
    registry: ArchitectureRegistry,
    dataset: dict[str, Any] | None = None,
    *,
    base: dict[str, Any] | None = None,
    task: Task | None = None,
    devices: list[str] | None = None,
    weight_roots: list[Path] | None = None,
    plugins: Any | None = None,
) -> ExperimentConfig:
    """Deep-merge ``partial`` onto ``base`` (default: the task defaults), convert and validate it.

    ``dataset`` is the project's ``dataset.json`` (``None`` before an import: the
    split index is then checked when a run starts). ``devices`` are the ids this
    machine offers (default: asked from ``core.devices``). ``weight_roots``, when
    given, are the folders ``model.weights_path`` must lie in (and a logger's
    ``file:`` store). ``plugins`` (the ``PluginHost``), when given, checks the
    loggers, callbacks, loss and metrics the config names (``plugin_choices``).
    """
    if partial is None:
        partial = {}
    if not isinstance(partial, dict):
        raise ValidationError("config must be an object", field="config")
    check_depth(partial)
    if base is None:
        base = task_defaults(task)
        hardware = partial.get("hardware")
        if devices is not None and not (isinstance(hardware, dict) and "devices" in hardware):
            base["hardware"]["devices"] = _default_devices(devices)
    config = parse_config(deep_merge(base, partial))
    validate_config(config, registry, dataset, task=task, devices=devices, weight_roots=weight_roots, plugins=plugins)
    return config


def _default_devices(available: list[str]) -> list[str]:
    gpus = sorted(d for d in available if d.startswith("gpu:"))
    return gpus[:1] or ["cpu"]


def validate_config(
    config: ExperimentConfig,
    registry: ArchitectureRegistry,
    dataset: dict[str, Any] | None = None,
    *,
    task: Task | None = None,
    devices: list[str] | None = None,
    weight_roots: list[Path] | None = None,
    plugins: Any | None = None,
) -> None:
    """The checks a type cannot express; raises ``ValidationError`` naming the field.

    With ``task``, also that the architecture serves it and that early
    stopping follows a metric it logs. Last, the input size against the
    architecture's declared constraints and the architecture's own
    ``validate(config)`` (``core/plugin_checks.py``).
    """
    _check_model(config, registry, weight_roots)
    if task is not None:
        _check_task_fit(config, registry, task)
    if dataset is not None:
        _check_split(config, dataset)
    _check_schedule(config)
    _check_hardware(config, devices)
    if plugins is not None:  # the loggers, callbacks, loss and metrics it names, with their options
        from .plugin_choices import check_plugin_choices

        check_plugin_choices(config, plugins, task, weight_roots)
    from .augmentations import validate_augmentations

    validate_augmentations(config.data.augmentations.train, config.data.image_size, config.data.channels, "config.data.augmentations.train")
    validate_augmentations(config.data.augmentations.val, config.data.image_size, config.data.channels, "config.data.augmentations.val")
    from ..plugin_checks import check_architecture_config  # input size constraints, then the plugin's own validate

    arch = registry.get(config.model.architecture, field="config.model.architecture")
    check_architecture_config(arch, config_to_dict(config), task=task.id if task is not None else None)


def _check_model(config: ExperimentConfig, registry: ArchitectureRegistry, weight_roots: list[Path] | None) -> None:
    model = config.model
    arch = registry.get(model.architecture, field="config.model.architecture")
    if model.pretrained and not arch.has_pretrained:
        raise ValidationError(
            f"{model.architecture} has no pretrained weights; set model.pretrained to false", field="config.model.pretrained"
        )
    if model.freeze_backbone and not arch.head_name:
        raise ValidationError(
            f"{model.architecture} does not declare its classifier head, so freeze_backbone is not supported",
            field="config.model.freeze_backbone",
        )
    if model.weights_path is not None:
        check_weights_path(model.weights_path, weight_roots)


def _check_task_fit(config: ExperimentConfig, registry: ArchitectureRegistry, task: Task) -> None:
    arch = registry.get(config.model.architecture, field="config.model.architecture")
    if task.id not in tasks_of(arch):
        serving = [a.name for a in registry.for_task(task.id)]
        raise ValidationError(
            f"config.model.architecture: {arch.name} is not a {task.name.lower()} architecture (task '{task.id}'); "
            f"choose one of: {', '.join(serving) or 'none installed'}",
            field="config.model.architecture", details={"task": task.id, "architectures": serving},
        )
    if task.augmentations is not None:
        for subset in ("train", "val"):
            for index, spec in enumerate(getattr(config.data.augmentations, subset)):
                if spec.name not in task.augmentations:
                    field = f"config.data.augmentations.{subset}[{index}].name"
                    raise ValidationError(
                        f"{field}: {spec.name} cannot be used for task '{task.id}' (it does not move the task's "
                        f"annotations with the pixels); allowed: {', '.join(task.augmentations)}",
                        field=field, details={"allowed": list(task.augmentations)},
                    )
    stopping = config.training.early_stopping
    if stopping is not None and stopping.monitor not in task.monitors():
        raise ValidationError(
            f"config.training.early_stopping.monitor: '{stopping.monitor}' is not a metric task '{task.id}' logs "
            f"(expected one of: {', '.join(task.monitors())})",
            field="config.training.early_stopping.monitor", details={"allowed": task.monitors()},
        )


def check_weights_path(raw: str, roots: list[Path] | None) -> Path:
    """An existing regular file; inside one of ``roots`` when roots are given (the API passes them)."""
    field = "config.model.weights_path"
    if not raw or "\x00" in raw or len(raw) > 4096:
        raise ValidationError("weights_path must be a non-empty path without NUL characters", field=field)
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise ValidationError("weights_path must be an absolute path", field=field)
    resolved = path.resolve()
    if roots is not None and not any(resolved.is_relative_to(root.resolve()) for root in roots):
        raise ValidationError(
            "weights_path must be inside the workspace or an allowed import root", field=field, details={"path": raw}
        )
    if not resolved.is_file():
        raise ValidationError("weights_path does not name an existing file", field=field, details={"path": raw})
    return resolved


def _check_split(config: ExperimentConfig, dataset: dict[str, Any]) -> None:
    names = dataset.get("split_names") or []
    if config.split_index >= len(names):
        available = ", ".join(f"{i}: {n}" for i, n in enumerate(names)) or "none; create a split first"
        raise ValidationError(
            f"split_index {config.split_index} does not exist (splits: {available})",
            field="config.split_index",
            details={"split_names": list(names)},
        )


def _check_schedule(config: ExperimentConfig) -> None:
    training = config.training
    scheduler = training.scheduler
    if scheduler.warmup_epochs and scheduler.warmup_epochs >= training.max_epochs:
        raise ValidationError(
            f"warmup_epochs ({scheduler.warmup_epochs}) must be less than max_epochs ({training.max_epochs})",
            field="config.training.scheduler.warmup_epochs",
        )
    if scheduler.name == "multistep":
        milestones = scheduler.milestones
        if not milestones:
            raise ValidationError("multistep needs at least one milestone epoch", field="config.training.scheduler.milestones")
        if any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
            raise ValidationError("milestones must be strictly increasing", field="config.training.scheduler.milestones")


def _check_hardware(config: ExperimentConfig, available: list[str] | None) -> None:
    hardware = config.hardware
    if hardware.executor == "ray":
        _check_ray_hardware(config)
        return
    for name in ("num_workers", "gpus_per_worker", "cpus_per_worker"):
        if getattr(hardware, name) != _RAY_DEFAULTS[name]:
            raise ValidationError(f"{name} applies to executor: ray (training across a Ray cluster's workers)",
                                  field=f"config.hardware.{name}")
    ids = hardware.devices
    if not ids:
        raise ValidationError("devices must name at least one device", field="config.hardware.devices")
    for index, device in enumerate(ids):
        if not isinstance(device, str) or not _DEVICE_RE.match(device):
            raise ValidationError(
                f"device {device!r} is not a device id such as 'cpu' or 'gpu:0'", field=f"config.hardware.devices[{index}]"
            )
    if len(set(ids)) != len(ids):
        raise ValidationError("devices must not repeat", field="config.hardware.devices")
    if "cpu" in ids and len(ids) > 1:
        raise ValidationError("train on the CPU or on GPUs, not both", field="config.hardware.devices")
    if available is None:
        from ..devices import known_device_ids

        available = sorted(known_device_ids())
    for index, device in enumerate(ids):
        if device not in available:
            raise ValidationError(
                f"device {device} is not available on this machine (available: {', '.join(sorted(available))})",
                field=f"config.hardware.devices[{index}]",
                details={"available": sorted(available)},
            )
    if hardware.num_processes > 1 and ids != ["cpu"]:
        raise ValidationError(
            "num_processes applies to CPU training; for GPUs list the devices instead", field="config.hardware.num_processes"
        )
    if config.training.precision == "16-mixed" and ids == ["cpu"]:
        raise ValidationError(
            "16-mixed needs a GPU (Lightning has no fp16 mixed precision on the CPU and would silently use bf16); "
            "on the CPU use 32 or bf16-mixed", field="config.training.precision"
        )


_RAY_DEFAULTS = {"num_workers": 1, "gpus_per_worker": 0, "cpus_per_worker": 1}


def _check_ray_hardware(config: ExperimentConfig) -> None:
    """``executor: ray``: the cluster places the workers, so this machine's devices are not asked about."""
    hardware = config.hardware
    if hardware.num_processes > 1:
        raise ValidationError("with executor: ray, num_workers sets the DDP processes, not num_processes",
                              field="config.hardware.num_processes")
    if hardware.strategy != "auto":
        raise ValidationError("with executor: ray the strategy is Ray Train's DDP; leave strategy: auto",
                              field="config.hardware.strategy")
    if config.training.precision == "16-mixed" and hardware.gpus_per_worker == 0:
        raise ValidationError("16-mixed needs GPUs: set gpus_per_worker, or use 32 or bf16-mixed on CPU workers",
                              field="config.training.precision")


# -- YAML files ------------------------------------------------------------------


def load_config_file(path: Path) -> dict[str, Any]:
    """The partial config document of a YAML file (``yaml.safe_load``: plain data only)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read config file {path}: {exc}", field="config") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"{Path(path).name} is not valid YAML: {exc}", field="config") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValidationError(f"{Path(path).name} must hold a mapping at the top level", field="config")
    return document
