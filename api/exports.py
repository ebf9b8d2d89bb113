"""``/api/export``: reference section 6 (create, list, get, delete, download).

``GET /api/export/formats`` belongs to the plugin controller; it is matched
before these routes because its path is static (a test pins that).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import JSONBody, Parameter, QueryParameter
from litestar.response import File

from modelyard.core.records import Export

from .deps import ServicesDep
from .envelope import Deleted, Ok, WaitSeconds, after_wait, ok
from .openapi import error_responses

VERIFICATION_HEADER = "X-Modelyard-Verification"


class ExportCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /api/export/{project_id}`` (reference section 6)."""

    experiment_id: Annotated[str, msgspec.Meta(max_length=64)]
    run_id: Annotated[str, msgspec.Meta(max_length=64)]
    checkpoint: Literal["best", "last"] = "best"
    #: an exporter id from ``GET /api/export/formats``
    format: Annotated[str, msgspec.Meta(max_length=64)] = "onnx"
    #: validated against the format's option schema (defaults filled in)
    options: dict[str, Any] = msgspec.field(default_factory=dict)


ProjectId = Annotated[str, Parameter(description="Project id, e.g. proj-a1b2c3d4", max_length=64)]
ExportId = Annotated[str, Parameter(description="Export id, e.g. export-a1b2c3d4", max_length=64)]


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in ascii_name).strip("._") or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


class ExportController(Controller):
    path = "/api/export"
    tags = ["Export"]

    @get("/{project_id:str}", operation_id="ListExports", summary="List exports", sync_to_thread=True,
         responses=error_responses(404, 409, 422))
    def list_exports(self, services: ServicesDep, project_id: ProjectId) -> Ok[list[Export]]:
        return ok(services.exports.list(project_id))

    @post("/{project_id:str}", operation_id="CreateExport", summary="Create + start export",
          description="The format comes from the exporter registry (`GET /api/export/formats`) and `options` are "
                      "checked against its schema (422 naming `options.<name>`). The worker exports, then verifies "
                      "the file against PyTorch on up to 64 real images before marking it `completed`.",
          sync_to_thread=True, status_code=201, responses=error_responses(400, 404, 409, 422))
    def create_export(self, services: ServicesDep, project_id: ProjectId, data: JSONBody[ExportCreate]) -> Ok[Export]:
        record = services.exports.create(
            project_id,
            experiment_id=data.experiment_id,
            run_id=data.run_id,
            checkpoint=data.checkpoint,
            format=data.format,
            options=data.options,
        )
        return ok(record)

    @get("/{project_id:str}/{export_id:str}", operation_id="GetExport", summary="Get export status",
         sync_to_thread=True, responses=error_responses(404, 409, 422))
    def get_export(self, services: ServicesDep, project_id: ProjectId, export_id: ExportId,
                   wait: WaitSeconds = 0) -> Ok[Export]:
        return ok(after_wait(lambda: services.exports.get(project_id, export_id), wait, services.settings))

    @delete("/{project_id:str}/{export_id:str}", operation_id="DeleteExport", summary="Delete export",
            sync_to_thread=True, status_code=200, responses=error_responses(404, 409, 422))
    def delete_export(self, services: ServicesDep, project_id: ProjectId, export_id: ExportId) -> Ok[Deleted]:
        services.exports.delete(project_id, export_id)
        return ok(Deleted(id=export_id))

    @get("/{project_id:str}/{export_id:str}/download", operation_id="DownloadExport",
         summary="Download exported model",
         description="The model file; `?bundle=zip` gives a ZIP with the model, `labels.json`, `preprocessing.json` "
                     "and `README.txt`. 409 until the export has a file. A file that failed verification is still "
                     f"served, with `{VERIFICATION_HEADER}: failed`.",
         sync_to_thread=True, media_type="application/octet-stream", responses=error_responses(404, 409, 422))
    def download_export(
        self,
        services: ServicesDep,
        project_id: ProjectId,
        export_id: ExportId,
        bundle: Annotated[Literal["zip"] | None, QueryParameter(description="`zip` for the deployment bundle")] = None,
    ) -> File:
        download = services.exports.download(project_id, export_id, bundle=bundle == "zip")
        headers = {
            "content-disposition": content_disposition(download.filename),
            VERIFICATION_HEADER.lower(): "failed" if download.verification_failed else "passed",
            "x-content-type-options": "nosniff",
        }
        return File(path=download.path, media_type=download.media_type, headers=headers)
