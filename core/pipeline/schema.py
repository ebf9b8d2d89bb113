"""The pipeline file: one YAML document describing a whole reproducible job.

``modelyard run PIPELINE.yaml`` reads it. The sections mirror the API's
request bodies (project, dataset import, split, experiment config,
evaluation, exports), so whatever a pipeline does can also be done by hand
through the API or the CLI. The schema is msgspec Structs that reject unknown
fields; every error names the field path (``split.ratios.train``). The
``experiment.config`` section is an experiment config (DESIGN section 5) and is
validated by the same code as an API request.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml

from ..errors import ValidationError
from ..registry import ArchitectureRegistry, TaskRegistry
from ..tasks import check_task
from ..training.config import ExperimentConfig, check_depth, deep_merge, parse_config, task_defaults, validate_config

Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Seed = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
Subset = Literal["train", "val", "test"]
Checkpoint = Literal["best", "last"]


class ProjectSpec(msgspec.Struct, forbid_unknown_fields=True):
    #: a project of this name is reused when it exists (its task must match), else created
    name: str
    task: str = "classification"
    description: str = ""


class DatasetSpec(msgspec.Struct, forbid_unknown_fields=True):
    #: a folder or a ``.zip`` file; a relative path is relative to the pipeline file's folder
    path: str
    #: an importer id (``imagefolder``, ``csv``, ...) or ``auto`` to detect it
    format: str = "auto"
    #: when the source differs from the project's dataset: true replaces the dataset, false merges new images in
    replace: bool = False


class RatiosSpec(msgspec.Struct, forbid_unknown_fields=True):
    train: Fraction
    val: Fraction = 0.0
    test: Fraction = 0.0


class SplitSpec(msgspec.Struct, forbid_unknown_fields=True):
    #: a split of this name is reused when it holds exactly the assignment ratios and seed give
    name: str
    ratios: RatiosSpec
    seed: Seed = 42
    stratified: bool = True


class ExperimentSpec(msgspec.Struct, forbid_unknown_fields=True):
    #: an experiment of this name is reused (its config replaced by this one), else created
    name: str
    description: str = ""
    #: an experiment config (DESIGN section 5); omitted fields take the defaults, split_index comes from ``split``
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class EvaluateSpec(msgspec.Struct, forbid_unknown_fields=True):
    checkpoint: Checkpoint = "best"
    subsets: list[Subset] = msgspec.field(default_factory=lambda: ["test"])
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32


class ExportSpec(msgspec.Struct, forbid_unknown_fields=True):
    #: an export format id from ``modelyard plugins`` / ``GET /api/export/formats``
    format: str = "onnx"
    checkpoint: Checkpoint = "best"
    #: the format's options (see its JSON schema); omitted ones take their defaults
    options: dict[str, Any] = msgspec.field(default_factory=dict)


class Pipeline(msgspec.Struct, forbid_unknown_fields=True):
    project: ProjectSpec
    dataset: DatasetSpec
    split: SplitSpec
    experiment: ExperimentSpec
    #: ``null`` skips the evaluation step
    evaluate: EvaluateSpec | None = msgspec.field(default_factory=EvaluateSpec)
    exports: list[ExportSpec] = msgspec.field(default_factory=list)


#: Top-level keys that mark a YAML document as a pipeline file rather than an experiment config.
PIPELINE_KEYS = frozenset({"project", "dataset", "split", "experiment"})

_AT_PATH = re.compile(r" - at `\$\.?(.*)`$")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def is_pipeline_document(document: Any) -> bool:
    """True for a pipeline file's document; experiment configs have none of its sections."""
    return isinstance(document, dict) and bool(PIPELINE_KEYS & set(document))


def read_yaml(path: Path) -> Any:
    """The document of a YAML file (``yaml.safe_load``: plain data only), errors naming the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read {path}: {exc}", field="pipeline") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"{Path(path).name} is not valid YAML: {exc}", field="pipeline") from None


def parse_pipeline(document: Any) -> Pipeline:
    """Convert a document to a ``Pipeline`` (types and ranges); errors name the field path."""
    if not isinstance(document, dict):
        raise ValidationError("a pipeline file must hold a mapping with project, dataset, split and experiment",
                              field="pipeline")
    if not is_pipeline_document(document):
        raise ValidationError(
            "this is not a pipeline file (it has none of project, dataset, split, experiment); an experiment "
            "config is trained with `modelyard train CONFIG.yaml --project ID`",
            field="pipeline",
        )
    check_depth(document, root="pipeline")
    try:
        pipeline = msgspec.convert(document, Pipeline)
    except msgspec.ValidationError as exc:
        raise _field_error(exc) from None
    if pipeline.evaluate is not None and len(set(pipeline.evaluate.subsets)) != len(pipeline.evaluate.subsets):
        raise ValidationError("evaluate.subsets names a subset twice", field="evaluate.subsets")
    if pipeline.evaluate is not None and not pipeline.evaluate.subsets:
        raise ValidationError("evaluate.subsets must name at least one subset", field="evaluate.subsets")
    return pipeline


def load_pipeline(path: Path) -> Pipeline:
    """Read and parse a pipeline file (see ``parse_pipeline``)."""
    return parse_pipeline(read_yaml(path))


def experiment_partial(pipeline: Pipeline, split_index: int) -> dict[str, Any]:
    """The experiment config to send: the pipeline's ``experiment.config`` training on the pipeline's split."""
    partial = dict(pipeline.experiment.config)
    given = partial.get("split_index")
    if given is not None and given != split_index:
        raise ValidationError(
            "experiment.config.split_index is set by the pipeline's split section; remove it",
            field="experiment.config.split_index",
        )
    partial["split_index"] = split_index
    return partial


def check_experiment_config(
    partial: dict[str, Any],
    registry: ArchitectureRegistry,
    tasks: TaskRegistry,
    task: str = "classification",
    root: str = "experiment.config",
) -> ExperimentConfig:
    """Validate an experiment config's structure without this machine's devices or a dataset.

    Used before any step runs (and by the tests of ``configs/``): names,
    types, ranges, architectures and augmentations are checked now; whether
    the named devices exist is checked when the run starts.
    """
    if not isinstance(partial, dict):
        raise ValidationError(f"{root} must be a mapping", field=root)
    task_entry = tasks.get(check_task(task, tasks, field="project.task"))
    check_depth(partial, root=root)
    config = parse_config(deep_merge(task_defaults(task_entry), partial), root=root)
    try:
        validate_config(config, registry, None, task=task_entry, devices=list(config.hardware.devices))
    except ValidationError as exc:
        field = exc.field or ""
        if field.startswith("config"):
            field = root + field[len("config"):]
        details = {k: v for k, v in exc.details.items() if k != "field"}
        raise ValidationError(exc.message, field=field or root, details=details) from None
    return config


def _field_error(exc: msgspec.ValidationError) -> ValidationError:
    """msgspec's ``... - at `$.split.seed``` as a ``ValidationError`` naming ``split.seed``."""
    text = str(exc)
    path = ""
    if match := _AT_PATH.search(text):
        path = match.group(1)
        text = text[: match.start()]
    if named := (_UNKNOWN.search(text) or _MISSING.search(text)):
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    field = path or "pipeline"
    return ValidationError(f"{field}: {text}", field=field)
