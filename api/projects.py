"""``/api/projects``: reference section 1."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody, Parameter

from modelyard.core.records import Project

from .deps import ServicesDep
from .envelope import Deleted, Ok, ok
from .openapi import DESCRIPTION_META, REGISTERED_TASKS, documented, error_responses, name_meta


Name = Annotated[str, name_meta(200)]
Description = Annotated[str, DESCRIPTION_META]
#: a task id registered by a plugin (``GET /api/system/plugins`` lists them)
Task = Annotated[str, documented(enum=[REGISTERED_TASKS])]


class ProjectCreate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    task: Task = "classification"
    description: Description = ""


class ProjectUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    task: Task | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


ProjectId = Annotated[str, Parameter(description="Project id, e.g. proj-a1b2c3d4", max_length=64)]


class ProjectController(Controller):
    path = "/api/projects"
    tags = ["Projects"]

    @get("/", operation_id="ListProjects", summary="List all projects", sync_to_thread=True)
    def list_projects(self, services: ServicesDep) -> Ok[list[Project]]:
        return ok(services.projects.list())

    @post("/", operation_id="CreateProject", summary="Create a new project", sync_to_thread=True, status_code=201,
          responses=error_responses(400, 413, 422))
    def create_project(self, services: ServicesDep, data: JSONBody[ProjectCreate]) -> Ok[Project]:
        return ok(services.projects.create(data.name, data.task, data.description))

    @get("/{project_id:str}", operation_id="GetProject", summary="Get project details", sync_to_thread=True,
         responses=error_responses(400, 404, 409, 422))
    def get_project(self, services: ServicesDep, project_id: ProjectId) -> Ok[Project]:
        return ok(services.projects.get(project_id))

    @patch("/{project_id:str}", operation_id="UpdateProject", summary="Update project", sync_to_thread=True,
           responses=error_responses(400, 404, 409, 413, 422))
    def update_project(self, services: ServicesDep, project_id: ProjectId, data: JSONBody[ProjectUpdate]) -> Ok[Project]:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        return ok(services.projects.update(project_id, changes))

    @delete("/{project_id:str}", operation_id="DeleteProject", summary="Delete project and all its data",
            sync_to_thread=True, status_code=200, responses=error_responses(400, 404, 409, 422))
    def delete_project(self, services: ServicesDep, project_id: ProjectId) -> Ok[Deleted]:
        services.projects.delete(project_id)
        services.predictions.cache.remove_project(project_id)  # its loaded models would answer for a deleted project
        return ok(Deleted(id=project_id))
