"""``/api/predict``: DESIGN section 12 (load trained models into the server's cache, ask them about images).

The predict handlers read their own body (``predict_body``): images as
multipart parts or dataset names as JSON, in memory under the predict byte
limit. The service call then waits on the model's dynamic batcher, so it runs
in a worker thread: the event loop stays free to take the concurrent requests
the batcher merges into one forward pass.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import anyio.to_thread
import msgspec
from litestar import Controller, Litestar, Request, delete, get, post, put
from litestar.openapi.spec import Operation
from litestar.params import JSONBody, Parameter, QueryParameter

from modelyard.core.errors import ModelNotFoundError, ProjectNotFoundError, ValidationError
from modelyard.core.ids import is_valid_id
from modelyard.core.prediction.service import EXPLAIN_METHODS, PredictOptions
from modelyard.core.services import Services

from .deps import ServicesDep
from .envelope import Deleted, Ok, ok
from .evaluations import BoxPrediction, Prediction
from .openapi import error_responses
from .predict_body import body_kind, check_declared_length, read_body, request_body_doc

ProjectId = Annotated[str, Parameter(description="Project id, e.g. proj-a1b2c3d4", max_length=64)]
ModelId = Annotated[str, Parameter(description="Loaded model id, e.g. model-a1b2c3d4", max_length=64)]
Explain = Annotated[Literal[EXPLAIN_METHODS] | None, QueryParameter(  # type: ignore[valid-type]
    description="`gradcam`: a heat map of the top class per image (classification, checkpoint models only)")]


class PredictModelLoad(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/predict/{project_id}/models``: a run's checkpoint or a completed export (exactly one)."""

    #: the API's schema says it (``api/openapi.py`` ONE_OF_REQUIRED); the handler refuses anything else (422)
    __one_of_required__: ClassVar[tuple[tuple[str, ...], ...]] = (("run_id",), ("export_id",))

    run_id: Annotated[str, msgspec.Meta(
        max_length=64, description="A run of the project: its checkpoint, in PyTorch")] | msgspec.UnsetType = msgspec.UNSET
    checkpoint: Annotated[Literal["best", "last"], msgspec.Meta(description="The run's checkpoint")] = "best"
    export_id: Annotated[str, msgspec.Meta(
        max_length=64, description="A completed export of the project, in its runtime")] | msgspec.UnsetType = msgspec.UNSET
    device: Annotated[str, msgspec.Meta(
        max_length=16, description="An id of `/api/system/devices`; default: the first GPU, else `cpu`",
    )] | msgspec.UnsetType = msgspec.UNSET


class PredictDefault(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``PUT /api/predict/{project_id}/default``."""

    model_id: Annotated[str, msgspec.Meta(max_length=64)]


class PredictModelSource(msgspec.Struct, omit_defaults=True):
    """Where a loaded model comes from."""

    kind: Literal["checkpoint", "export"]
    run_id: str
    experiment_id: str
    checkpoint: str
    device: str
    #: exports only
    export_id: str | None = None
    format: str | None = None


class PredictModel(msgspec.Struct):
    """A model the server holds for a project (``GET /api/predict/{project_id}/models``)."""

    id: str
    project_id: str
    source: PredictModelSource
    task: str
    classes: list[str]
    #: ``[height, width]`` the images are resized to
    input_size: list[int]
    channels: int
    #: ``pytorch`` for a checkpoint, ``onnxruntime`` (or the export format) for an export
    runtime: str
    device: str
    memory_bytes: int
    load_seconds: float
    loaded_at: str
    #: predict requests served, images answered, forward passes run (batches < images: requests shared passes)
    requests: int
    images: int
    batches: int
    is_default: bool


class ImageProblem(msgspec.Struct):
    #: ``INVALID_IMAGE``
    code: str
    message: str


class Explanation(msgspec.Struct):
    """``?explain=gradcam``: where the network looked for the image's top class (Grad-CAM heat map)."""

    method: str
    class_id: int
    class_name: str
    #: the network's layer whose activations were weighed
    layer: str
    #: ``image/png``, ``width`` x ``height`` = the model's input size: stretch it over the image to overlay it
    media_type: str
    width: int
    height: int
    png_base64: str


# The two answer types below are dataclasses, not Structs, only because msgspec cannot describe an untagged union
# of Structs (the OpenAPI document needs one: the service's answers carry no tag). They document; the handlers
# return the service's answer as it is.
@dataclass
class PredictedImage:
    """The answer for one image: classes (classification, most probable first) or boxes (detection)."""

    filename: str
    width: int
    height: int
    predictions: list[Prediction | BoxPrediction]
    #: only with ``?explain=gradcam``
    explanation: Explanation | None = None


class RefusedImage(msgspec.Struct):
    """An image that cannot be used (not an image, truncated, too many pixels...), in its place in ``results``."""

    filename: str
    error: ImageProblem


@dataclass
class PredictAnswer:
    model_id: str
    task: str
    #: one per image, in the order sent
    results: list[PredictedImage | RefusedImage]


@dataclass
class _PredictOperation(Operation):
    """Documents the body the predict handlers read themselves: multipart images or JSON dataset names."""

    def __post_init__(self) -> None:
        self.request_body = request_body_doc()


PREDICT_DESCRIPTION = (
    "Multipart: one or more `files` parts (images) and optional fields `top_k` (classification) and "
    "`score_threshold` (detection); or JSON `{\"filenames\": [...]}` naming images of the project's dataset. "
    "Each image is validated as an import validates it; one that cannot be used gets an `error` "
    "(`INVALID_IMAGE`) in its place while the others are answered. Concurrent requests share forward passes. "
    "413 past the request's byte or image limit; 409 when the project has no model to answer with."
)


def _given(value: str | msgspec.UnsetType) -> str | None:
    return None if isinstance(value, msgspec.UnsetType) else value


def _model(info: dict[str, Any]) -> PredictModel:
    return msgspec.convert(info, PredictModel)


def check_ids(project_id: str, model_id: str | None = None) -> None:
    """404 for an id that cannot name a project or a loaded model, before anything reads or waits."""
    if not is_valid_id(project_id, "proj"):
        raise ProjectNotFoundError(project_id)
    if model_id is not None and not is_valid_id(model_id, "model"):
        raise ModelNotFoundError(f"Model {model_id[:100]} is not loaded in project {project_id}",
                                 {"model_id": model_id[:100], "project_id": project_id})


class PredictController(Controller):
    path = "/api/predict/{project_id:str}"
    tags = ["Predict"]

    @post("/models", operation_id="LoadPredictModel", summary="Load a model (checkpoint or export)",
          description="`{\"run_id\", \"checkpoint\"}` loads a run's checkpoint (PyTorch), `{\"export_id\"}` a "
                      "completed export (ONNX in onnxruntime); exactly one of them. The first model of a project "
                      "is its default. A model that cannot be loaded is a 409 with the reason; the cache evicts "
                      "the least recently used models beyond its size.",
          sync_to_thread=True, status_code=201, responses=error_responses(404, 409, 422))
    def load_model(self, services: ServicesDep, project_id: ProjectId, data: JSONBody[PredictModelLoad]) -> Ok[PredictModel]:
        check_ids(project_id)
        run_id, export_id, device = _given(data.run_id), _given(data.export_id), _given(data.device)
        # a source that does not exist is a 404 whatever else the body says (the service checks the device first)
        if run_id is not None and export_id is None:
            services.runs.run_dir(project_id, run_id)
        elif export_id is not None and run_id is None:
            services.exports.get(project_id, export_id)
        else:
            raise ValidationError("Give either run_id (with checkpoint) or export_id", field="run_id")
        return ok(_model(services.predictions.load(project_id, run_id=run_id, checkpoint=data.checkpoint,
                                                   export_id=export_id, device=device)))

    @get("/models", operation_id="ListPredictModels", summary="List loaded models (most recently used first)",
         sync_to_thread=True, responses=error_responses(404, 422))
    def list_models(self, services: ServicesDep, project_id: ProjectId) -> Ok[list[PredictModel]]:
        check_ids(project_id)
        return ok([_model(info) for info in services.predictions.list(project_id)])

    @get("/models/{model_id:str}", operation_id="GetPredictModel", summary="Get a loaded model", sync_to_thread=True,
         responses=error_responses(404, 422))
    def get_model(self, services: ServicesDep, project_id: ProjectId, model_id: ModelId) -> Ok[PredictModel]:
        check_ids(project_id, model_id)
        return ok(_model(services.predictions.get(project_id, model_id)))

    @delete("/models/{model_id:str}", operation_id="UnloadPredictModel", summary="Unload a model",
            description="Requests the model already took still get their answers.",
            sync_to_thread=True, status_code=200, responses=error_responses(404, 422))
    def unload_model(self, services: ServicesDep, project_id: ProjectId, model_id: ModelId) -> Ok[Deleted]:
        check_ids(project_id, model_id)
        services.predictions.unload(project_id, model_id)
        return ok(Deleted(id=model_id))

    @put("/default", operation_id="SetDefaultPredictModel", summary="Choose the project's default model",
         description="`POST /api/predict/{project_id}` answers with the default model.",
         sync_to_thread=True, responses=error_responses(404, 422))
    def set_default(self, services: ServicesDep, project_id: ProjectId, data: JSONBody[PredictDefault]) -> Ok[PredictModel]:
        check_ids(project_id, data.model_id)
        return ok(_model(services.predictions.set_default(project_id, data.model_id)))

    @post("/", operation_id="Predict", summary="Predict with the project's default model",
          description=PREDICT_DESCRIPTION, status_code=200, request_max_body_size=None,
          operation_class=_PredictOperation, responses=error_responses(404, 409, 413, 415, 422))
    async def predict(self, request: Request[Any, Any, Any], services: ServicesDep, project_id: ProjectId,
                      explain: Explain = None) -> Ok[PredictAnswer]:
        return ok(await answer(request, services, project_id, None, explain))

    @post("/models/{model_id:str}", operation_id="PredictWithModel", summary="Predict with a loaded model",
          description=PREDICT_DESCRIPTION, status_code=200, request_max_body_size=None,
          operation_class=_PredictOperation, responses=error_responses(404, 409, 413, 415, 422))
    async def predict_with_model(self, request: Request[Any, Any, Any], services: ServicesDep, project_id: ProjectId,
                                 model_id: ModelId, explain: Explain = None) -> Ok[PredictAnswer]:
        return ok(await answer(request, services, project_id, model_id, explain))


async def answer(request: Request[Any, Any, Any], services: Services, project_id: str, model_id: str | None,
                 explain: str | None) -> dict[str, Any]:
    """The service's answer, exactly as it gives it; every refusal that needs no body comes before reading it.

    The content type is checked first, as ``json_body_middleware`` checks it for every other body.
    """
    kind = body_kind(request.headers.get("content-type"))
    check_ids(project_id, model_id)
    settings = services.settings
    check_declared_length(request, settings.predict_max_request_bytes)
    await anyio.to_thread.run_sync(_check_model, services, project_id, model_id)
    body = await read_body(request, kind, settings.predict_max_request_bytes, settings.predict_max_files)
    options = PredictOptions(top_k=body.top_k, score_threshold=body.score_threshold, explain=explain)
    if body.filenames is not None:
        call = functools.partial(services.predictions.predict_dataset, project_id, model_id, body.filenames, options)
    else:
        call = functools.partial(services.predictions.predict, project_id, model_id, body.files, options)
    return await anyio.to_thread.run_sync(call)


def _check_model(services: Services, project_id: str, model_id: str | None) -> None:
    """404/409 (no such project, model not loaded, no default) before the body is read."""
    if model_id is None:
        services.workspace.existing_project_dir(project_id)
        services.predictions.cache.default(project_id)
    else:
        services.predictions.get(project_id, model_id)


@contextlib.asynccontextmanager
async def prediction_lifespan(app: Litestar) -> AsyncIterator[None]:
    """App lifespan: the loaded models' batcher threads stop with the server."""
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(app.state.services.predictions.close)
