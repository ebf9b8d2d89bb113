"""``/api/splits``: reference section 3 (splits stored inline in ``dataset.json``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import JSONBody, Parameter, QueryParameter

from modelyard.core.datasets.splits import check_ratios
from modelyard.core.errors import ValidationError

from .deps import ServicesDep
from .envelope import Ok, ok
from .openapi import documented, error_responses, name_meta
from .projects import ProjectId

SplitIndex = Annotated[int, Parameter(description="Position of the split in split_names", ge=0)]
#: 2**53: every seed is exact in a JSON number (2**63 - 1 was documented as 9.223372036854776e18, above int64).
SEED_MAX = 2**53
Seed = Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)]
#: ``check_ratios``: finite, train > 0, val and test >= 0, none above 1; their sum at most 1 is checked by the
#: service (422, field "ratios").
TrainShare = Annotated[float, documented(exclusiveMinimum=0, maximum=1)]
Share = Annotated[float, documented(minimum=0, maximum=1)]


#: What ``preview`` shows when asked with no share at all (the reference's example split).
PREVIEW_DEFAULT_RATIOS = (0.8, 0.1, 0.1)


class SplitRatios(msgspec.Struct, forbid_unknown_fields=True):
    """Shares of the images; they must sum to at most 1 (the rest get ``none``)."""

    train: TrainShare
    val: Share = 0.0
    test: Share = 0.0


class SplitCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, name_meta(100)]
    ratios: SplitRatios
    seed: Seed = 42
    stratified: bool = True


class SplitStats(msgspec.Struct):
    train: int
    val: int
    test: int
    none: int


class SplitPreview(msgspec.Struct):
    stats: SplitStats
    per_class: dict[str, SplitStats]
    warnings: list[str]


class SplitCreated(msgspec.Struct):
    split_index: int
    name: str
    stats: SplitStats
    per_class: dict[str, SplitStats]
    warnings: list[str]


class SplitSummary(msgspec.Struct):
    split_index: int
    name: str
    stats: SplitStats


class SplitDetail(msgspec.Struct):
    split_index: int
    name: str
    stats: SplitStats
    per_class: dict[str, SplitStats]


class SplitDeleted(msgspec.Struct):
    split_index: int
    name: str
    deleted: bool
    split_names: list[str]


class SplitController(Controller):
    path = "/api/splits"
    tags = ["Splits"]

    @get("/{project_id:str}", operation_id="ListSplits", summary="List all splits (names + stats)",
         sync_to_thread=True, responses=error_responses(404, 409, 422))
    def list_splits(self, services: ServicesDep, project_id: ProjectId) -> Ok[list[SplitSummary]]:
        return ok(msgspec.convert(services.splits.list(project_id), list[SplitSummary]))

    @post("/{project_id:str}", operation_id="CreateSplit", summary="Create a new split", sync_to_thread=True,
          status_code=201, responses=error_responses(400, 404, 409, 413, 422))
    def create_split(self, services: ServicesDep, project_id: ProjectId, data: JSONBody[SplitCreate]) -> Ok[SplitCreated]:
        ratios = check_ratios(data.ratios.train, data.ratios.val, data.ratios.test)
        created = services.splits.create(project_id, data.name, ratios, data.seed, data.stratified)
        return ok(msgspec.convert(created, SplitCreated))

    @get("/{project_id:str}/preview", operation_id="PreviewSplit", summary="Preview a split before creating",
         sync_to_thread=True, responses=error_responses(404, 409, 422))
    def preview_split(
        self,
        services: ServicesDep,
        project_id: ProjectId,
        train: Annotated[float | None, QueryParameter(
            description="Share of each class for training (> 0; the three shares sum to at most 1). Required when "
                        "val or test is given (422 otherwise). With no share given the preview is 0.8/0.1/0.1; "
                        "otherwise val and test left out are 0, as in the create body",
            le=1, schema_extra={"exclusiveMinimum": 0, "maximum": 1})] = None,
        # minimum 0 spelled out: Litestar leaves a falsy bound (ge=0) out of the schema
        val: Annotated[float | None, QueryParameter(description="Share for validation (needs train)", ge=0, le=1,
                                                    schema_extra={"minimum": 0, "maximum": 1})] = None,
        test: Annotated[float | None, QueryParameter(description="Share for testing (needs train)", ge=0, le=1,
                                                     schema_extra={"minimum": 0, "maximum": 1})] = None,
        seed: Annotated[int, QueryParameter(ge=0, le=SEED_MAX, description="Random seed")] = 42,
        stratified: Annotated[bool, QueryParameter(description="Keep class proportions in every subset")] = True,
    ) -> Ok[SplitPreview]:
        if train is None and val is None and test is None:
            ratios = check_ratios(*PREVIEW_DEFAULT_RATIOS)
        elif train is None:
            raise ValidationError("train is required when val or test is given (as ratios.train is in the create body)",
                                  field="train")
        else:
            ratios = check_ratios(train, val or 0.0, test or 0.0)
        preview = services.splits.preview(project_id, ratios, seed, stratified)
        return ok(msgspec.convert(preview, SplitPreview))

    @get("/{project_id:str}/{split_index:int}", operation_id="GetSplit",
         summary="Get split details (stats, per-class distribution)", sync_to_thread=True,
         responses=error_responses(404, 409, 422))
    def get_split(self, services: ServicesDep, project_id: ProjectId, split_index: SplitIndex) -> Ok[SplitDetail]:
        return ok(msgspec.convert(services.splits.get(project_id, split_index), SplitDetail))

    @delete("/{project_id:str}/{split_index:int}", operation_id="DeleteSplit",
            summary="Delete split (re-indexes remaining)",
            description="Later splits move down by one, and experiments on them follow (their `split_index` is "
                        "updated). Runs keep their frozen config: an evaluation without `split_index` finds the "
                        "run's split by name (409 if it was deleted), and resuming a run whose split moved or was "
                        "deleted is refused (409). Refused (409) while a run is pending or training.",
            sync_to_thread=True, status_code=200,
            responses=error_responses(404, 409, 422))
    def delete_split(self, services: ServicesDep, project_id: ProjectId, split_index: SplitIndex) -> Ok[SplitDeleted]:
        return ok(msgspec.convert(services.splits.delete(project_id, split_index), SplitDeleted))
