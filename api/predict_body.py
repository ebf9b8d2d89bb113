"""The body of a predict request: uploaded images (multipart) or dataset image names (JSON), read in memory.

Nothing is written to disk. The body is bounded by
``Settings.predict_max_request_bytes`` twice: on the declared
``Content-Length`` before anything is read, and on the bytes really received
(a chunked body declares nothing), so the parts held in memory are bounded
too. Form fields are parsed here, so ``top_k=abc`` is a 422 naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, ValidationException
from litestar.openapi.spec import Encoding, OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser, parse_options_header

from modelyard.core.errors import PayloadTooLargeError, UnsupportedMediaTypeError, ValidationError
from modelyard.core.prediction.service import MAX_TOP_K

from .json_body import is_json_media_type

FILES_FIELD = "files"
TEXT_FIELDS = ("top_k", "score_threshold")
#: a number needs far less; the cap keeps a hostile "field" from growing in memory
MAX_TEXT_FIELD_BYTES = 64
MAX_FILENAME_CHARS = 1024

TopK = Annotated[int, msgspec.Meta(ge=1, le=MAX_TOP_K)]
ScoreThreshold = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class PredictByName(msgspec.Struct, forbid_unknown_fields=True):
    """JSON body of a predict request: images already in the project's dataset, by name (as listed)."""

    filenames: Annotated[list[Annotated[str, msgspec.Meta(max_length=MAX_FILENAME_CHARS)]], msgspec.Meta(min_length=1)]
    top_k: TopK | None = None
    score_threshold: ScoreThreshold | None = None


@dataclass
class PredictBody:
    """What a predict request asks about: uploads (``files``) or dataset names (``filenames``), and its options."""

    files: list[tuple[str, bytes]] = field(default_factory=list)
    filenames: list[str] | None = None
    top_k: int | None = None
    score_threshold: float | None = None


def request_body_doc() -> RequestBody:
    """The OpenAPI request body of the predict endpoints (they read their own body, so Litestar cannot infer it)."""
    top_k = Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_TOP_K,
                   description="Classification: how many classes per image, most probable first")
    threshold = Schema(type=OpenAPIType.NUMBER, minimum=0, maximum=1,
                       description="Detection: the lowest score of a box in the answer")
    form = Schema(
        type=OpenAPIType.OBJECT,
        required=[FILES_FIELD],
        properties={
            FILES_FIELD: Schema(type=OpenAPIType.ARRAY, min_items=1, description="One or more images",
                                items=Schema(type=OpenAPIType.STRING, format="binary")),  # type: ignore[arg-type]
            "top_k": top_k,
            "score_threshold": threshold,
        },
        additional_properties=False,  # any other part is refused (422)
    )
    names = Schema(
        type=OpenAPIType.OBJECT,
        required=["filenames"],
        properties={
            "filenames": Schema(type=OpenAPIType.ARRAY, min_items=1, description="Names of images of the dataset",
                                items=Schema(type=OpenAPIType.STRING, max_length=MAX_FILENAME_CHARS)),
            "top_k": Schema(one_of=[top_k, Schema(type=OpenAPIType.NULL)], description=top_k.description),
            "score_threshold": Schema(one_of=[threshold, Schema(type=OpenAPIType.NULL)],
                                      description=threshold.description),
        },
        additional_properties=False,
    )
    return RequestBody(required=True, content={
        "multipart/form-data": OpenAPIMediaType(schema=form, encoding={FILES_FIELD: Encoding(content_type="image/*")}),
        "application/json": OpenAPIMediaType(schema=names),
    })


@dataclass(frozen=True)
class BodyKind:
    """``multipart`` (with its boundary) or ``json``."""

    kind: str
    boundary: str = ""


def body_kind(content_type: str | None) -> BodyKind:
    """The kind of body a Content-Type announces; 415 for anything but multipart/form-data or JSON."""
    if content_type and is_json_media_type(content_type):
        return BodyKind("json")
    media, options = parse_options_header(content_type or "")
    if media == "multipart/form-data" and options.get("boundary"):
        return BodyKind("multipart", options["boundary"])
    shown = (content_type or "none")[:100]
    raise UnsupportedMediaTypeError(
        f"Send images as multipart/form-data (field '{FILES_FIELD}') or dataset names as application/json, not {shown}",
        {"content_type": shown})


def check_declared_length(request: Request[Any, Any, Any], limit: int) -> None:
    """413 at once when the client says its body is larger than ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def read_body(request: Request[Any, Any, Any], kind: BodyKind, limit: int, max_files: int) -> PredictBody:
    """The request's images or names and options; 413 past ``limit`` bytes or ``max_files`` images, 422 malformed."""
    if kind.kind == "json":
        return _json_body(await _received(request, limit), max_files)
    return await _multipart_body(request, kind.boundary, limit, max_files)


async def _received(request: Request[Any, Any, Any], limit: int) -> bytes:
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_body(raw: bytes, max_files: int) -> PredictBody:
    if not raw.strip():
        raise ValidationError("A JSON body with 'filenames' is required", field="body")
    try:
        # strict=False as Litestar decodes every other body: 2.0 is an integer, "0.5" a number
        data = msgspec.json.decode(raw, type=PredictByName, strict=False)
    except msgspec.ValidationError as exc:
        # the same envelope (field paths from msgspec's message) as every body Litestar decodes itself
        raise ValidationException(detail=str(exc), extra=[{"key": "data", "message": str(exc), "source": "body"}]) from None
    except msgspec.DecodeError as exc:
        raise ClientException(detail=f"The body is not valid JSON: {exc}") from None
    if len(data.filenames) > max_files:
        raise _too_many(len(data.filenames), max_files)
    return PredictBody(filenames=data.filenames, top_k=data.top_k, score_threshold=data.score_threshold)


async def _multipart_body(request: Request[Any, Any, Any], boundary: str, limit: int, max_files: int) -> PredictBody:
    files: list[tuple[str, bytearray]] = []
    texts: dict[str, bytearray] = {}
    current: tuple[str, bytearray] | None = None  # the part being received: its field name and bytes so far
    received = 0
    try:
        with PushMultipartParser(boundary, max_segment_count=max_files + len(TEXT_FIELDS) + 1) as parser:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise _too_large(limit)
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        current = _start_part(event, files, texts, max_files)
                    elif event is None:
                        current = None
                    elif current is not None:
                        name, value = current
                        value += event
                        if name != FILES_FIELD and len(value) > MAX_TEXT_FIELD_BYTES:
                            raise ValidationError(f"Form field '{name}' is too long", field=name)
    except ParserLimitReached as exc:
        raise ValidationError(f"Malformed multipart body ({exc})", field=FILES_FIELD) from None
    except ParserError as exc:
        raise ValidationError(f"Malformed multipart body ({exc})", field=FILES_FIELD) from None
    if not files:
        raise ValidationError(f"Send at least one image in the multipart field '{FILES_FIELD}'", field=FILES_FIELD)
    return PredictBody(files=[(name, bytes(data)) for name, data in files],
                       top_k=_form_int(texts.get("top_k"), "top_k"),
                       score_threshold=_form_float(texts.get("score_threshold"), "score_threshold"))


def _start_part(segment: MultipartSegment, files: list[tuple[str, bytearray]], texts: dict[str, bytearray],
                max_files: int) -> tuple[str, bytearray]:
    """Where a new part's bytes go; 413 for one image too many, 422 for a field that is not ours or comes twice."""
    name = segment.name or ""
    if name == FILES_FIELD:
        if segment.filename is None:  # a text field, not a file: no client sends an image that way
            raise ValidationError(f"Each '{FILES_FIELD}' part must be a file (a filename in its Content-Disposition)",
                                  field=FILES_FIELD)
        if len(files) >= max_files:
            raise _too_many(len(files) + 1, max_files)
        files.append((segment.filename[:MAX_FILENAME_CHARS], bytearray()))
        return name, files[-1][1]
    if name in TEXT_FIELDS:
        if name in texts:
            raise ValidationError(f"Form field '{name}' is given twice", field=name)
        texts[name] = bytearray()
        return name, texts[name]
    shown = name[:100]
    raise ValidationError(f"Unexpected form field '{shown}' (expected: {FILES_FIELD}, {', '.join(TEXT_FIELDS)})",
                          field=shown)


def _form_int(raw: bytearray | None, name: str) -> int | None:
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace").strip()
    if not text.lstrip("+-").isdigit() or not text.isascii():
        raise ValidationError(f"Form field '{name}' must be an integer, not '{text[:20]}'", field=name)
    return int(text)


def _form_float(raw: bytearray | None, name: str) -> float | None:
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace").strip()
    try:
        return float(text)
    except ValueError:
        raise ValidationError(f"Form field '{name}' must be a number, not '{text[:20]}'", field=name) from None


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than the limit of {limit} bytes", {"limit": limit})


def _too_many(count: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"At most {limit} images per request", {"files": count, "limit": limit})
