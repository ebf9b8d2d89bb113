"""``/api/training/{project_id}/experiments``: reference section 4 (experiments; runs live in ``api/runs.py``)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody, Parameter

from modelyard.core.training.config import ExperimentConfig

from .deps import ServicesDep
from .envelope import Deleted, Ok, ok
from .openapi import error_responses
from .partial_config import PartialExperimentConfig, sent_fields
from .projects import Description, Name

Metrics = dict[str, float | int | None]


class ExperimentRun(msgspec.Struct):
    """A run of the experiment, as the experiment shows it (``GET .../runs/{id}`` has everything)."""

    id: str
    status: str
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    monitor: str | None
    best_metrics: Metrics
    best_epoch: int | None


class BestMetric(msgspec.Struct):
    """The best value of the monitored metric over the experiment's runs."""

    name: str
    value: float
    run_id: str | None
    epoch: int | None


class ExperimentSummary(msgspec.Struct):
    id: str
    name: str
    description: str
    created_at: str
    updated_at: str
    run_count: int
    latest_run: ExperimentRun | None
    best_metric: BestMetric | None


class Experiment(msgspec.Struct):
    """An experiment with its fully resolved config and its runs, newest first."""

    id: str
    name: str
    description: str
    config: ExperimentConfig
    created_at: str
    updated_at: str
    run_count: int
    latest_run: ExperimentRun | None
    best_metric: BestMetric | None
    runs: list[ExperimentRun]


class ExperimentCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Description = ""
    config: PartialExperimentConfig | msgspec.UnsetType = msgspec.UNSET


class ExperimentUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """``config`` is deep-merged onto the stored config (lists and nulls replace)."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET
    config: PartialExperimentConfig | msgspec.UnsetType = msgspec.UNSET


ProjectId = Annotated[str, Parameter(description="Project id, e.g. proj-a1b2c3d4", max_length=64)]
ExperimentId = Annotated[str, Parameter(description="Experiment id, e.g. exp-a1b2c3d4", max_length=64)]


def _experiment(data: dict[str, Any]) -> Experiment:
    return msgspec.convert(data, Experiment, strict=False)


class ExperimentController(Controller):
    path = "/api/training/{project_id:str}/experiments"
    tags = ["Experiments"]

    @get("/", operation_id="ListExperiments", summary="List experiments", sync_to_thread=True,
         responses=error_responses(404, 409, 422))
    def list_experiments(self, services: ServicesDep, project_id: ProjectId) -> Ok[list[ExperimentSummary]]:
        return ok([msgspec.convert(e, ExperimentSummary, strict=False) for e in services.experiments.list(project_id)])

    @post("/", operation_id="CreateExperiment", summary="Create experiment", sync_to_thread=True, status_code=201,
          description="Validates the config (architecture, split, augmentations, devices ...) and stores it resolved.",
          responses=error_responses(400, 404, 409, 422))
    def create_experiment(self, services: ServicesDep, project_id: ProjectId,
                          data: JSONBody[ExperimentCreate]) -> Ok[Experiment]:
        created = services.experiments.create(project_id, data.name, data.description, sent_fields(data.config))
        return ok(_experiment(created))

    @get("/{exp_id:str}", operation_id="GetExperiment", summary="Get experiment config", sync_to_thread=True,
         responses=error_responses(404, 409, 422))
    def get_experiment(self, services: ServicesDep, project_id: ProjectId, exp_id: ExperimentId) -> Ok[Experiment]:
        return ok(_experiment(services.experiments.get(project_id, exp_id)))

    @patch("/{exp_id:str}", operation_id="UpdateExperiment", summary="Update experiment config", sync_to_thread=True,
           description="Deep-merges `config` onto the stored one and re-validates it. Existing runs keep their frozen copy.",
           responses=error_responses(400, 404, 409, 422))
    def update_experiment(self, services: ServicesDep, project_id: ProjectId, exp_id: ExperimentId,
                          data: JSONBody[ExperimentUpdate]) -> Ok[Experiment]:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if "config" in changes:
            changes["config"] = sent_fields(data.config)
        return ok(_experiment(services.experiments.update(project_id, exp_id, changes)))

    @delete("/{exp_id:str}", operation_id="DeleteExperiment", summary="Delete experiment + runs", sync_to_thread=True,
            status_code=200, description="Refused with 409 while one of its runs is pending or running.",
            responses=error_responses(404, 409, 422))
    def delete_experiment(self, services: ServicesDep, project_id: ProjectId, exp_id: ExperimentId) -> Ok[Deleted]:
        services.experiments.delete(project_id, exp_id)
        return ok(Deleted(id=exp_id))
