"""``/api/datasets``: reference section 2 (import, describe, list, serve and clear a project's dataset)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.concurrency import sync_to_thread
from litestar.datastructures import ETag
from litestar.openapi.spec import Encoding, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import HeaderParameter, JSONBody, Parameter, QueryParameter
from litestar.response import File
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser, parse_options_header

from modelyard.core.errors import PayloadTooLargeError, UnsupportedMediaTypeError, ValidationError
from modelyard.core.records import Dataset

from .deps import ServicesDep
from .envelope import MAX_QUERY_INT, Deleted, Ok, Page, ok
from .openapi import NOT_MODIFIED, error_responses
from .projects import ProjectId

CACHE_CONTROL = "private, max-age=600"
FILTER_SPLIT_PATTERN = r"^(\d{1,6}:(train|val|test|none))?$"
UPLOAD_FIELD = "file"
TEXT_FIELDS = ("format", "replace")
MAX_TEXT_FIELD_BYTES = 1024

Filename = Annotated[str, Parameter(description="Name of an image of the dataset (as listed)", max_length=1024)]
IfNoneMatch = Annotated[str | None, HeaderParameter(name="If-None-Match", required=False, max_length=4096)]


#: ``resolve_local_source``: absolute (``~/`` is expanded), no NUL; it must also be an existing folder in an import root.
LOCAL_PATH_PATTERN = r"^~?/[^\u0000]*$"


class ImportLocal(msgspec.Struct, forbid_unknown_fields=True):
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, extra_json_schema={"extra": {"pattern": LOCAL_PATH_PATTERN}})]
    format: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "auto"
    replace: bool = False


class SkippedFile(msgspec.Struct):
    path: str
    reason: str


class ImportWarning(msgspec.Struct):
    """An imported image the import had to change, e.g. ``2 boxes clipped to the image``."""

    path: str
    reason: str


class DuplicateFile(msgspec.Struct):
    path: str
    duplicate_of: str


class ImportSummary(msgspec.Struct):
    imported: int
    skipped: list[SkippedFile]
    duplicates: list[DuplicateFile]
    classes: list[str]
    num_images: int
    format: str
    warnings: list[ImportWarning] = msgspec.field(default_factory=list)


class DatasetImage(msgspec.Struct, omit_defaults=True):
    filename: str
    class_name: str | None
    width: int
    height: int
    size: int
    format: str
    source_path: str
    split: list[str]
    #: boxes of the image (only in a detection dataset)
    num_boxes: int | None = None


class Annotation(msgspec.Struct, omit_defaults=True):
    type: str
    class_id: int
    class_name: str
    #: ``[x, y, w, h]`` in pixels, top-left origin (``bbox`` annotations only)
    bbox: list[float] | None = None


class DatasetImageInfo(DatasetImage, kw_only=True):
    sha256: str
    annotations: list[Annotation]
    source_subset: str | None


@dataclass
class _UploadOperation(Operation):
    """Documents the multipart body that ``import_upload`` parses itself (so it can stream it to disk)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={
                "multipart/form-data": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=[UPLOAD_FIELD],
                        properties={
                            UPLOAD_FIELD: Schema(type=OpenAPIType.STRING, format="binary", content_media_type="application/zip",  # type: ignore[arg-type]
                                                     description="A ZIP archive"),
                            # 256 characters fit MAX_TEXT_FIELD_BYTES (1024 bytes of UTF-8) whatever they are
                            "format": Schema(type=OpenAPIType.STRING, default="auto", max_length=MAX_TEXT_FIELD_BYTES // 4),
                            "replace": Schema(type=OpenAPIType.BOOLEAN, default=False),
                        },
                        additional_properties=False,  # any other part is refused (422)
                    ),
                    encoding={UPLOAD_FIELD: Encoding(content_type="application/zip")},
                )
            },
        )


class DatasetController(Controller):
    path = "/api/datasets"
    tags = ["Datasets"]

    @get("/{project_id:str}", operation_id="GetDataset", summary="Get dataset info (stats, class list)",
         sync_to_thread=True, responses=error_responses(404, 409, 422))
    def get_dataset(self, services: ServicesDep, project_id: ProjectId) -> Ok[Dataset]:
        return ok(services.datasets.info(project_id))

    @delete("/{project_id:str}", operation_id="ClearDataset", summary="Clear dataset", sync_to_thread=True,
            status_code=200, responses=error_responses(404, 409, 422))
    def clear_dataset(self, services: ServicesDep, project_id: ProjectId) -> Ok[Deleted]:
        services.datasets.clear(project_id)
        return ok(Deleted(id=project_id))

    @post("/{project_id:str}/import/local", operation_id="ImportLocal", summary="Import from local path",
          sync_to_thread=True, status_code=200, responses=error_responses(400, 403, 404, 409, 413, 422))
    def import_local(self, services: ServicesDep, project_id: ProjectId, data: JSONBody[ImportLocal]) -> Ok[ImportSummary]:
        summary = services.datasets.import_local(project_id, data.path, data.format, data.replace)
        return ok(msgspec.convert(summary, ImportSummary))

    @post("/{project_id:str}/import/upload", operation_id="ImportUpload", summary="Import via ZIP upload",
          status_code=200, request_max_body_size=None, operation_class=_UploadOperation,
          responses=error_responses(403, 404, 409, 413, 415, 422))
    async def import_upload(self, request: Request[Any, Any, Any], services: ServicesDep, project_id: ProjectId) -> Ok[ImportSummary]:
        """Multipart field ``file`` (a ZIP), optional ``format`` and ``replace``; streamed to disk, never held in memory."""
        await sync_to_thread(services.datasets.check_import_allowed, project_id)
        folder = services.workspace.new_staging_dir(f"upload-{project_id}")
        try:
            form = await _receive_upload(request, folder / "upload.zip", services.settings.max_upload_bytes)
            summary = await sync_to_thread(services.datasets.import_zip, project_id, form.archive, form.format, form.replace)
        finally:
            await sync_to_thread(shutil.rmtree, folder, True)
        return ok(msgspec.convert(summary, ImportSummary))

    @get("/{project_id:str}/images", operation_id="ListImages", summary="List images (paginated)", sync_to_thread=True,
         responses=error_responses(404, 409, 422))
    def list_images(
        self,
        services: ServicesDep,
        project_id: ProjectId,
        page: Annotated[int, QueryParameter(ge=1, le=MAX_QUERY_INT, description="Page number")] = 1,
        page_size: Annotated[int, QueryParameter(ge=1, le=MAX_QUERY_INT, description="Items per page (capped at 500)")] = 50,
        sort_by: Annotated[Literal["filename", "class", "size", "num_boxes"],
                           QueryParameter(description="Sort field (num_boxes: boxes per image, for detection)")] = "filename",
        sort_order: Annotated[Literal["asc", "desc"], QueryParameter(description="Sort direction")] = "asc",
        filter_class: Annotated[str | None, QueryParameter(
            description="Only this class (detection: images with any box of it)", max_length=200)] = None,
        filter_split: Annotated[
            str | None, QueryParameter(description="<split index>:<train|val|test|none>, e.g. 0:train; the split must exist",
                                       max_length=20, schema_extra={"pattern": FILTER_SPLIT_PATTERN})
        ] = None,
        search: Annotated[str | None, QueryParameter(description="Filename substring (case-insensitive)", max_length=200)] = None,
    ) -> Ok[Page[DatasetImage]]:
        result = services.datasets.list_images(
            project_id, page, page_size, sort_by, sort_order, filter_class, filter_split, search
        )
        return ok(msgspec.convert(result, Page[DatasetImage]))

    @get("/{project_id:str}/images/{filename:str}", operation_id="GetImage", summary="Get image file",
         sync_to_thread=True, media_type="image/*", responses={**error_responses(404, 409, 422), **NOT_MODIFIED})
    def get_image(self, services: ServicesDep, project_id: ProjectId, filename: Filename,
                  if_none_match: IfNoneMatch = None) -> Response[Any]:
        path, meta = services.datasets.image(project_id, filename)
        return _file_response(path, meta["media_type"], meta["sha256"], if_none_match)

    @get("/{project_id:str}/images/{filename:str}/info", operation_id="GetImageInfo",
         summary="Get image annotation info", sync_to_thread=True, responses=error_responses(404, 409, 422))
    def get_image_info(self, services: ServicesDep, project_id: ProjectId, filename: Filename) -> Ok[DatasetImageInfo]:
        return ok(msgspec.convert(services.datasets.image_info(project_id, filename), DatasetImageInfo))

    @get("/{project_id:str}/thumbnails/{filename:str}", operation_id="GetThumbnail", summary="Get thumbnail",
         sync_to_thread=True, media_type="image/*", responses={**error_responses(404, 409, 422), **NOT_MODIFIED})
    def get_thumbnail(self, services: ServicesDep, project_id: ProjectId, filename: Filename,
                      if_none_match: IfNoneMatch = None) -> Response[Any]:
        path, meta = services.datasets.thumbnail(project_id, filename)
        return _file_response(path, meta["media_type"], f"{meta['sha256']}-thumb{meta['size']}", if_none_match)


def _file_response(path: Path, media_type: str, etag: str, if_none_match: str | None) -> Response[Any]:
    """The file with a strong ETag, or 304 when the client already has it."""
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": CACHE_CONTROL}
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(content=b"", status_code=304, headers={**headers, "ETag": f'"{etag}"'})
    return File(path=path, media_type=media_type, headers=headers, etag=ETag(value=etag),
                content_disposition_type="inline", filename=path.name)


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or any(c.removeprefix("W/").strip('"') == etag for c in candidates)


@dataclass
class _UploadForm:
    archive: Path
    format: str
    replace: bool


async def _receive_upload(request: Request[Any, Any, Any], archive: Path, limit: int) -> _UploadForm:
    """Stream the multipart body to ``archive``, enforcing ``limit`` on the bytes really received."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != "multipart/form-data" or not options.get("boundary"):
        raise UnsupportedMediaTypeError("Upload a ZIP as multipart/form-data with the field 'file'")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"The upload is larger than the limit of {limit} bytes", {"limit": limit})
    texts: dict[str, bytearray] = {}
    received = 0
    found_file = False
    current: str | None = None
    try:
        with open(archive, "wb") as out, PushMultipartParser(options["boundary"], max_segment_count=len(TEXT_FIELDS) + 1) as parser:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLargeError(f"The upload is larger than the limit of {limit} bytes", {"limit": limit})
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        current = _start_part(event, found_file, texts)
                        found_file = found_file or current == UPLOAD_FIELD
                    elif event is None:
                        current = None
                    elif current == UPLOAD_FIELD:
                        out.write(event)
                    elif current is not None:
                        texts[current] += event
                        if len(texts[current]) > MAX_TEXT_FIELD_BYTES:
                            raise ValidationError(f"Form field '{current}' is too long", field=current)
    except ParserLimitReached:
        raise ValidationError("Too many parts in the multipart body", field=UPLOAD_FIELD) from None
    except ParserError as exc:
        raise ValidationError(f"Malformed multipart body ({exc})", field=UPLOAD_FIELD) from None
    if not found_file:
        raise ValidationError("The multipart body has no 'file' field with a ZIP", field=UPLOAD_FIELD)
    return _UploadForm(
        archive=archive,
        format=texts.get("format", bytearray(b"auto")).decode("utf-8", "replace").strip() or "auto",
        replace=_form_bool(texts.get("replace")),
    )


def _start_part(segment: MultipartSegment, found_file: bool, texts: dict[str, bytearray]) -> str:
    name = segment.name or ""
    if name == UPLOAD_FIELD:
        if found_file:
            raise ValidationError("Send exactly one 'file' part", field=UPLOAD_FIELD)
        return UPLOAD_FIELD
    if name in TEXT_FIELDS and name not in texts:
        texts[name] = bytearray()
        return name
    raise ValidationError(f"Unexpected form field '{name[:100]}'", field=name[:100])


def _form_bool(raw: bytearray | None) -> bool:
    if raw is None:
        return False
    value = raw.decode("utf-8", "replace").strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ValidationError("Form field 'replace' must be true or false", field="replace")
