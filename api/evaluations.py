"""``/api/evaluation``: reference section 5 (create, list, get, delete, per-image results)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import JSONBody, Parameter, QueryParameter

from modelyard.core.evaluation.index import MAX_PAGE_SIZE, ResultsQuery
from modelyard.core.records import Evaluation, EvaluationSummary

from .deps import ServicesDep
from .envelope import MAX_QUERY_INT, Deleted, Ok, Page, WaitSeconds, after_wait, ok
from .openapi import error_responses

Subset = Literal["train", "val", "test"]


class EvaluationCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/evaluation/{project_id}`` (reference section 5, plus ``devices``)."""

    experiment_id: Annotated[str, msgspec.Meta(max_length=64)]
    run_id: Annotated[str, msgspec.Meta(max_length=64)]
    checkpoint: Literal["best", "last"] = "best"
    #: default: the split the run trained on
    split_index: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None
    split_subset: Subset | Annotated[list[Subset], msgspec.Meta(min_length=1, max_length=3)] = "test"
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 32
    #: ids from ``/api/system/devices``: ``["cpu"]`` (the default) or GPUs (several evaluate with DDP)
    devices: Annotated[list[Annotated[str, msgspec.Meta(max_length=16)]], msgspec.Meta(min_length=1, max_length=8)] | None = None
    #: CPU only: evaluate with DDP over this many processes
    num_processes: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    #: object detection: the confidence from which a predicted box counts (default 0.5)
    score_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None


class ClassRef(msgspec.Struct):
    class_id: int
    class_name: str


class Prediction(msgspec.Struct):
    class_id: int
    class_name: str
    confidence: float


class ClassProbability(msgspec.Struct):
    class_id: int
    class_name: str
    probability: float


class ImageResult(msgspec.Struct):
    filename: str
    subset: str
    ground_truth: ClassRef
    prediction: Prediction
    correct: bool
    #: the five most probable classes (fewer when the model has fewer), most probable first
    probabilities: list[ClassProbability]
    #: cross-entropy on the true class (what ``sort_by=error`` orders by)
    loss: float


class BoxRef(msgspec.Struct):
    class_id: int
    class_name: str
    #: ``[x, y, w, h]`` in pixels of the stored image, top-left origin
    bbox: list[float]


class BoxPrediction(msgspec.Struct):
    class_id: int
    class_name: str
    score: float
    bbox: list[float]


class BoxMatch(msgspec.Struct):
    #: ``TP`` (a prediction on a box of its class), ``FP`` (on nothing, or on a box of another class: ``ground_truth``
    #: names it) or ``FN`` (a box no prediction found)
    type: Literal["TP", "FP", "FN"]
    #: index into ``predictions``
    prediction: int | None
    #: index into ``ground_truth``
    ground_truth: int | None
    iou: float | None


class DetectionImageResult(msgspec.Struct):
    """One image of an ``object_detection`` evaluation (DESIGN section 10): boxes at the score threshold."""

    filename: str
    subset: str
    ground_truth: list[BoxRef]
    predictions: list[BoxPrediction]
    matches: list[BoxMatch]
    tp: int
    fp: int
    fn: int
    #: no false positive and no missed box
    correct: bool


def _image_result(row: dict[str, Any]) -> ImageResult | DetectionImageResult | dict[str, Any]:
    """A results row as its task's documented record (a task core does not know answers its own row as is)."""
    if "predictions" in row:
        return msgspec.convert(row, DetectionImageResult)
    if "prediction" in row:
        return msgspec.convert(row, ImageResult)
    return row


ProjectId = Annotated[str, Parameter(description="Project id, e.g. proj-a1b2c3d4", max_length=64)]
EvalId = Annotated[str, Parameter(description="Evaluation id, e.g. eval-a1b2c3d4", max_length=64)]


class EvaluationController(Controller):
    path = "/api/evaluation"
    tags = ["Evaluation"]

    @get("/{project_id:str}", operation_id="ListEvaluations", summary="List evaluations", sync_to_thread=True,
         responses=error_responses(404, 409, 422))
    def list_evaluations(self, services: ServicesDep, project_id: ProjectId) -> Ok[list[EvaluationSummary]]:
        return ok([EvaluationSummary.of(r) for r in services.evaluations.list(project_id)])

    @post("/{project_id:str}", operation_id="CreateEvaluation", summary="Create + start evaluation",
          description="Validates the run, checkpoint, split and subset, then starts a worker; the evaluation is "
                      "`pending` until the worker picks it up. Poll `GET` for `progress` and the metrics.",
          sync_to_thread=True, status_code=201, responses=error_responses(400, 404, 409, 422))
    def create_evaluation(self, services: ServicesDep, project_id: ProjectId,
                          data: JSONBody[EvaluationCreate]) -> Ok[Evaluation]:
        record = services.evaluations.create(
            project_id,
            experiment_id=data.experiment_id,
            run_id=data.run_id,
            checkpoint=data.checkpoint,
            split_index=data.split_index,
            split_subset=data.split_subset,
            batch_size=data.batch_size,
            devices=data.devices,
            num_processes=data.num_processes,
            score_threshold=data.score_threshold,
        )
        return ok(record)

    @get("/{project_id:str}/{eval_id:str}", operation_id="GetEvaluation", summary="Get evaluation status + results",
         sync_to_thread=True, responses=error_responses(404, 409, 422))
    def get_evaluation(
        self, services: ServicesDep, project_id: ProjectId, eval_id: EvalId,
        include: Annotated[Literal["curves"] | None, QueryParameter(
            description="`curves` adds the per-class PR and ROC curves (up to 200 points each) to `metrics`; "
                        "left out by default to keep the answer readable")] = None,
        wait: WaitSeconds = 0,
    ) -> Ok[Evaluation]:
        record = after_wait(lambda: services.evaluations.get(project_id, eval_id), wait, services.settings)
        if include != "curves" and record.metrics is not None:
            record = msgspec.structs.replace(record, metrics=msgspec.structs.replace(record.metrics, curves=None))
        return ok(record)

    @delete("/{project_id:str}/{eval_id:str}", operation_id="DeleteEvaluation", summary="Delete evaluation",
            description="Stops the worker of a pending or running evaluation, then removes it.",
            sync_to_thread=True, status_code=200, responses=error_responses(404, 409, 422))
    def delete_evaluation(self, services: ServicesDep, project_id: ProjectId, eval_id: EvalId) -> Ok[Deleted]:
        services.evaluations.delete(project_id, eval_id)
        return ok(Deleted(id=eval_id))

    @get("/{project_id:str}/{eval_id:str}/results", operation_id="ListEvaluationResults",
         summary="Per-image results (paginated)",
         description="`sort_by`: `filename` (A-Z), `confidence` (most confident first) or `error` (highest loss on "
                     "the true class first); `sort_order` reverses the natural direction. Filters combine. "
                     "Object detection: `error` sorts by the number of errors (false positives + missed boxes), "
                     "`confidence` by the best box's score, `filter_correct=false` keeps images with errors, "
                     "`filter_class`/`filter_predicted` match an image with any true/predicted box of the class. "
                     "Available once the evaluation has completed (409 before).",
         sync_to_thread=True, responses=error_responses(404, 409, 422))
    def list_results(
        self,
        services: ServicesDep,
        project_id: ProjectId,
        eval_id: EvalId,
        page: Annotated[int, QueryParameter(ge=1, le=MAX_QUERY_INT, description="Page number (from 1)")] = 1,
        page_size: Annotated[int, QueryParameter(ge=1, le=MAX_QUERY_INT,
                                                 description=f"Items per page (capped at {MAX_PAGE_SIZE})")] = 50,
        sort_by: Annotated[Literal["filename", "confidence", "error"], QueryParameter(description="Sort key")] = "filename",
        sort_order: Annotated[Literal["asc", "desc"] | None,
                              QueryParameter(description="Default: the key's natural direction")] = None,
        filter_correct: Annotated[bool | None, QueryParameter(description="true: correct only, false: errors only")] = None,
        filter_class: Annotated[str | None, QueryParameter(max_length=500, description="Ground-truth class name")] = None,
        filter_predicted: Annotated[str | None, QueryParameter(max_length=500, description="Predicted class name")] = None,
    ) -> Ok[Page[ImageResult | DetectionImageResult]]:
        query = ResultsQuery(
            page=page, page_size=page_size, sort_by=sort_by, sort_order=sort_order, filter_correct=filter_correct,
            filter_class=filter_class, filter_predicted=filter_predicted,
        )
        items, total = services.evaluations.results(project_id, eval_id, query)
        pages = (total + query.page_size - 1) // query.page_size
        results = [_image_result(item) for item in items]
        return ok(Page(items=results, page=page, page_size=query.page_size, total=total, pages=pages))
