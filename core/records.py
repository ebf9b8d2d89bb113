"""The records modelyard keeps on disk and serves, typed: projects, dataset summaries, runs, evaluations, exports.

Core reads and writes these Structs and the API returns them as they are, so
a field has one name and one type from the file to the client. Reading is
forgiving where it must be: a field this version does not know (written by
an older or newer one) is ignored, and a field an older version did not
write takes its default. ``read_record`` is the one reader; writing is
``atomic_write_json(path, record.stored())``.

Only a job's ``id`` and ``status`` are required: every other field has a
default, so a record from any version reads. Fields listed in a type's ``DERIVED`` are computed when a record is read
(queue place, elapsed time, heartbeat age) and never stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from .errors import CorruptDataError, ModelyardError
from .jsonio import plain_value

R = TypeVar("R", bound=msgspec.Struct)

Metrics = dict[str, float | int | None]


def read_record(path: Path, record_type: type[R]) -> R:
    """Decode a record file as ``record_type``; ``CorruptDataError`` naming the file when it is not one."""
    data = path.read_bytes()
    try:
        return msgspec.json.decode(data, type=record_type, strict=False)
    except msgspec.DecodeError as exc:
        raise CorruptDataError(f"{path.name} is corrupt and cannot be read ({exc})", {"file": path.name}) from exc


# -- projects and datasets -----------------------------------------------------------------
class Project(msgspec.Struct, kw_only=True):
    """``project.json``."""

    id: str
    name: str
    task: str = "classification"
    description: str = ""
    created_at: str = ""
    updated_at: str = ""


class ImageStats(msgspec.Struct):
    num_images: int = 0
    min_width: int | None = None
    max_width: int | None = None
    min_height: int | None = None
    max_height: int | None = None
    formats: list[str] = msgspec.field(default_factory=list)


class DatasetSource(msgspec.Struct):
    kind: str
    format: str
    imported_at: str


class Dataset(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What ``GET /api/datasets/{project_id}`` answers: a summary of ``dataset.json``.

    ``class_counts`` counts annotations per class: images for classification,
    boxes for a task whose annotations are boxes. Only such a dataset has the
    last three fields (absent otherwise, so a classification answer is unchanged).
    """

    task: str
    classes: list[str]
    class_counts: dict[str, int]
    num_images: int
    num_unlabelled: int
    image_stats: ImageStats
    split_names: list[str]
    source: DatasetSource | None
    #: images with at least one box of each class (detection)
    class_image_counts: dict[str, int] | None = None
    #: boxes in the dataset (detection)
    num_boxes: int | None = None
    #: images without any box, kept as background (detection)
    num_background: int | None = None


# -- every job -------------------------------------------------------------------------------
#: A job error's message is cut to this many characters (a traceback belongs in the job's log).
ERROR_MESSAGE_MAX = 2000


class JobError(msgspec.Struct):
    type: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> JobError:
        """What a job records about the exception that ended it: a domain error's message, else ``str(exc)``."""
        message = exc.message if isinstance(exc, ModelyardError) else str(exc)
        return cls(type(exc).__name__, (message or type(exc).__name__)[:ERROR_MESSAGE_MAX])


class JobClaim(msgspec.Struct):
    """Who executes the job: the server's queue or a CLI command (docs/internals/jobs.md)."""

    by: str
    pid: int
    at: str
    started: int | None = None


class JobProgress(msgspec.Struct):
    done: int = 0
    total: int = 0


class JobRecord(msgspec.Struct, kw_only=True):
    """The fields every job's record has (``run.json``, ``evaluation.json``, ``export.json``)."""

    id: str
    project_id: str = ""
    status: str
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    error: JobError | None = None
    worker_pid: int | None = None
    #: the worker's start time in clock ticks, so a reused pid is not mistaken for it
    worker_started: int | None = None
    worker_pgid: int | None = None
    claimed_by: JobClaim | None = None
    stop_requested: bool = False
    #: the server killed the worker (it ignored a stop request or stopped making progress)
    killed: bool = False
    #: while pending: place among all queued jobs, and what it waits for
    queue_position: int | None = None
    waiting_reason: str | None = None

    DERIVED: ClassVar[tuple[str, ...]] = ("queue_position", "waiting_reason")

    def stored(self: R) -> R:
        """The record as it is written: derived fields cleared."""
        return msgspec.structs.replace(self, **{name: None for name in self.DERIVED})  # type: ignore[attr-defined]

    def with_fields(self: R, **fields: Any) -> R:
        """A copy with ``fields`` set from plain values (dicts, lists), validated against the field types.

        A name that is not a field is refused (``TypeError``): it would be dropped silently otherwise.
        """
        if unknown := sorted(set(fields) - set(self.__struct_fields__)):  # type: ignore[attr-defined]
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(unknown)}")
        plain = msgspec.to_builtins(fields, enc_hook=plain_value)
        return msgspec.convert({**msgspec.to_builtins(self), **plain}, type(self), strict=False)


# -- runs ---------------------------------------------------------------------------------------
class RunProgress(msgspec.Struct):
    epoch: int = 0
    total_epochs: int = 0
    step: int = 0
    steps_per_epoch: int = 0
    eta_s: float | None = None
    images_per_s: float | None = None


class RunCheckpoints(msgspec.Struct):
    best: str | None = None
    last: str | None = None


class RunTimings(msgspec.Struct):
    queued_s: float | None = None
    train_s: float | None = None


class RunPrecision(msgspec.Struct):
    """What ``training.precision`` asked for, what the run uses, and why (``auto`` decides per device)."""

    requested: str
    precision: str
    reason: str


class RunResumeRecord(msgspec.Struct):
    at: str
    from_epoch: int
    max_epochs: int
    checkpoint: str | None = None
    fallback_from: str | None = None


class RunEarlyStop(msgspec.Struct):
    """The epoch (1-based) after which early stopping ended the run, and the rule that did it."""

    epoch: int
    monitor: str
    patience: int
    max_epochs: int


class Run(JobRecord, kw_only=True):
    """``run.json`` (docs/internals/run-protocol.md) plus the fields derived when it is read."""

    experiment_id: str = ""
    devices: list[str] = msgspec.field(default_factory=lambda: ["cpu"])
    num_processes: int = 1
    progress: RunProgress = msgspec.field(default_factory=RunProgress)
    latest_metrics: Metrics = msgspec.field(default_factory=dict)
    best_metrics: Metrics = msgspec.field(default_factory=dict)
    best_epoch: int | None = None
    monitor: str = "val/loss"
    checkpoints: RunCheckpoints = msgspec.field(default_factory=RunCheckpoints)
    timings: RunTimings = msgspec.field(default_factory=RunTimings)
    resumes: list[RunResumeRecord] = msgspec.field(default_factory=list)
    #: set when training starts
    precision: RunPrecision | None = None
    #: set when early stopping ended the run before ``max_epochs``
    stopped_early: RunEarlyStop | None = None
    #: derived: seconds from start to end (or to now while it runs)
    elapsed_s: float | None = None
    #: derived, while running: seconds since the worker's last heartbeat
    heartbeat_age_s: float | None = None

    DERIVED: ClassVar[tuple[str, ...]] = (*JobRecord.DERIVED, "elapsed_s", "heartbeat_age_s")


# -- evaluations ----------------------------------------------------------------------------
class Averages(msgspec.Struct):
    precision: float | None
    recall: float | None
    f1: float | None


class ClassMetrics(msgspec.Struct):
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    ap: float | None


class ConfusionMatrix(msgspec.Struct):
    labels: list[str]
    matrix: list[list[int]]


class PrCurve(msgspec.Struct):
    precision: list[float | None]
    recall: list[float | None]


class RocCurve(msgspec.Struct):
    fpr: list[float | None]
    tpr: list[float | None]


class ClassCurves(msgspec.Struct):
    pr: PrCurve
    roc: RocCurve


class EvaluationMetrics(msgspec.Struct, omit_defaults=True):
    """Aggregate numbers of an evaluation; which fields a task fills is the task's (DESIGN sections 6 and 10).

    Classification: ``accuracy``, ``loss``, ``macro``, ``weighted``, ``per_class``
    (``top5_accuracy`` and ``curves`` when they apply). Object detection:
    ``map`` (IoU .5:.95), ``map_50``, ``map_75``, ``per_class_ap``, and
    ``precision``/``recall`` of the boxes scoring at least ``score_threshold``
    (matched at IoU >= ``iou_threshold``); its ``confusion_matrix`` has a
    ``background`` row (missed boxes) and column (boxes with no object).
    A field a task does not fill is left out.
    """

    num_images: int
    confusion_matrix: ConfusionMatrix
    accuracy: float | None | msgspec.UnsetType = msgspec.UNSET
    loss: float | None | msgspec.UnsetType = msgspec.UNSET
    macro: Averages | msgspec.UnsetType = msgspec.UNSET
    weighted: Averages | msgspec.UnsetType = msgspec.UNSET
    per_class: dict[str, ClassMetrics] | msgspec.UnsetType = msgspec.UNSET
    #: only with more than 5 classes
    top5_accuracy: float | None = None
    #: one-vs-rest PR and ROC curves per class, at most 200 points each; only with ``?include=curves``
    curves: dict[str, ClassCurves] | None = None
    map: float | None | msgspec.UnsetType = msgspec.UNSET
    map_50: float | None | msgspec.UnsetType = msgspec.UNSET
    map_75: float | None | msgspec.UnsetType = msgspec.UNSET
    per_class_ap: dict[str, float | None] | msgspec.UnsetType = msgspec.UNSET
    precision: float | None | msgspec.UnsetType = msgspec.UNSET
    recall: float | None | msgspec.UnsetType = msgspec.UNSET
    score_threshold: float | msgspec.UnsetType = msgspec.UNSET
    iou_threshold: float | msgspec.UnsetType = msgspec.UNSET


class Evaluation(JobRecord, kw_only=True):
    """``evaluation.json``."""

    experiment_id: str = ""
    run_id: str = ""
    checkpoint: str = "best"
    split_index: int = 0
    split_name: str = ""
    split_subset: str | list[str] = "test"
    batch_size: int = 32
    devices: list[str] = msgspec.field(default_factory=lambda: ["cpu"])
    #: CPU evaluation: DDP over this many processes (GPUs: one process per listed device)
    num_processes: int = 1
    #: detection: the confidence from which a predicted box counts (precision, recall, confusion matrix)
    score_threshold: float | None = None
    progress: JobProgress = msgspec.field(default_factory=JobProgress)
    num_images: int | None = None
    skipped: int | None = None
    #: the model's class names, in class-id order
    classes: list[str] | None = None
    metrics: EvaluationMetrics | None = None


class EvaluationSummary(msgspec.Struct, kw_only=True):
    """A list entry: the record without the (large) metrics, plus the headline numbers."""

    id: str
    experiment_id: str
    run_id: str
    checkpoint: str
    split_index: int
    split_subset: str | list[str]
    status: str
    created_at: str
    finished_at: str | None
    progress: JobProgress
    num_images: int | None
    accuracy: float | None
    loss: float | None
    error: JobError | None

    @classmethod
    def of(cls, evaluation: Evaluation) -> EvaluationSummary:
        metrics = evaluation.metrics
        return cls(
            id=evaluation.id, experiment_id=evaluation.experiment_id, run_id=evaluation.run_id,
            checkpoint=evaluation.checkpoint, split_index=evaluation.split_index, split_subset=evaluation.split_subset,
            status=evaluation.status, created_at=evaluation.created_at, finished_at=evaluation.finished_at,
            progress=evaluation.progress, num_images=evaluation.num_images, error=evaluation.error,
            accuracy=_set_or_none(metrics.accuracy) if metrics else None,
            loss=_set_or_none(metrics.loss) if metrics else None,
        )


def _set_or_none(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


# -- exports ------------------------------------------------------------------------------------
class ExportFile(msgspec.Struct):
    name: str
    size: int
    sha256: str


def _described(kind: Any, description: str) -> Any:
    return Annotated[kind, msgspec.Meta(description=description)]


class AppliedPolicy(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The ``VerificationPolicy`` a verification ran under (``modelyard.core.VerificationPolicy``)."""

    source: _described(str, "`exporter`: declared by the exporter; `default`: modelyard's default (the exporter "
                            "declares none); `task`: the task's comparison takes no policy and used its own rules.")
    atol: _described(float | msgspec.UnsetType, "Allowed max abs output difference is max(atol, rtol x the largest "
                                                "absolute reference output).") = msgspec.UNSET
    rtol: _described(float | msgspec.UnsetType, "The part of the tolerance relative to the output scale.") = msgspec.UNSET
    min_top1_agreement: _described(float | msgspec.UnsetType, "Classification: the least share of images with "
                                                              "PyTorch's top-1 class.") = msgspec.UNSET
    min_box_agreement: _described(float | msgspec.UnsetType, "Detection: the least share of agreeing boxes "
                                                             "(see box_agreement).") = msgspec.UNSET
    lossy: _described(bool | msgspec.UnsetType, "Agreement only: the tolerances are reported, not applied.") = msgspec.UNSET


class Verification(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Exported model vs PyTorch on real images, compared the way the project's task says.

    Classification fills ``max_abs_diff`` and ``top1_agreement`` (tolerance
    relative to the logit scale); object detection fills the box fields
    (``score_threshold`` ... ``max_score_diff``) and leaves those two out.
    A field a task does not use is absent, never ``null``. ``policy`` is the
    exporter's verification policy it ran under; an export built on a
    ``base_format`` also holds ``base``, the base file's own verification.
    """

    max_abs_diff: float | None | msgspec.UnsetType = msgspec.UNSET
    top1_agreement: float | msgspec.UnsetType = msgspec.UNSET
    images: int
    passed: bool
    tolerance: _described(float, "Classification: allowed max abs logit difference. "
                                 "Detection: allowed max abs score difference of a matched box.")
    problem: str | None = None
    score_threshold: _described(float | msgspec.UnsetType, "Detection: boxes with at least this score are compared "
                                "(the threshold inside the exported graph).") = msgspec.UNSET
    boxes: _described(int | msgspec.UnsetType, "Detection: boxes PyTorch finds above the threshold, all "
                      "images together.") = msgspec.UNSET
    matched: _described(int | msgspec.UnsetType, "Detection: PyTorch boxes paired with an exported box "
                        "(greedy, highest IoU first).") = msgspec.UNSET
    excused: _described(int | msgspec.UnsetType, "Detection: unpaired boxes excused as rounding near-ties (score "
                        "within the tolerance of the threshold or of an overlapping same-label box).") = msgspec.UNSET
    min_iou: _described(float | None | msgspec.UnsetType, "Detection: the smallest IoU of a matched pair "
                        "(null when no box was found).") = msgspec.UNSET
    iou_required: _described(float | msgspec.UnsetType, "Detection: the IoU every matched pair needs.") = msgspec.UNSET
    count_mismatches: _described(int | msgspec.UnsetType, "Detection: images whose number of boxes above the "
                                 "threshold differs (boxes within the tolerance of it excused).") = msgspec.UNSET
    label_mismatches: _described(int | msgspec.UnsetType, "Detection: matched pairs whose labels differ.") = msgspec.UNSET
    max_score_diff: _described(float | None | msgspec.UnsetType, "Detection: the largest score difference of "
                               "a matched pair.") = msgspec.UNSET
    box_agreement: _described(float | msgspec.UnsetType, "Detection: agreeing boxes (paired at IoU >= match_iou "
                              "with the same label) over pairs plus unpaired boxes that are not excused; 1.0 without "
                              "boxes.") = msgspec.UNSET
    match_iou: _described(float | msgspec.UnsetType, "Detection: the least IoU of a pair.") = msgspec.UNSET
    policy: _described(AppliedPolicy | msgspec.UnsetType, "The verification policy applied.") = msgspec.UNSET
    format: _described(str | msgspec.UnsetType, "In `base`: the base format whose file was verified.") = msgspec.UNSET
    base: _described(Verification | msgspec.UnsetType, "An export built on a base_format: the base file's own "
                     "verification against PyTorch, under the base exporter's policy.") = msgspec.UNSET


class DeploymentMetadata(msgspec.Struct, omit_defaults=True):
    classes: list[str]
    input_size: list[int]
    channels: int
    mean: list[float]
    std: list[float]
    architecture: str
    run_id: str
    experiment_id: str
    checkpoint: str
    #: absent for classification (its exports' records are as before tasks)
    task: str = "classification"
    #: task-specific facts stored in the file, e.g. detection's ``score_threshold``
    export: dict[str, Any] = msgspec.field(default_factory=dict)


class Export(JobRecord, kw_only=True):
    """``export.json``."""

    experiment_id: str = ""
    run_id: str = ""
    checkpoint: str = "best"
    format: str = "onnx"
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    progress: JobProgress = msgspec.field(default_factory=JobProgress)
    file: ExportFile | None = None
    verification: Verification | None = None
    #: true when the file exists but does not match PyTorch (still downloadable, flagged)
    verification_failed: bool = False
    metadata: DeploymentMetadata | None = None
