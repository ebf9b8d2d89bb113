"""Error responses for the OpenAPI document, in our envelope.

Litestar documents a 400 with its own ``{status_code, detail}`` shape for any
handler with parameters; our clients get ``ErrorEnvelope`` instead, and
validation failures are 422. Handlers declare ``responses=error_responses(...)``
with the statuses they can really answer, so the document matches the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin  # subclassed: only the flag differs
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.typing import FieldDefinition

from modelyard.core import records

from .envelope import ErrorEnvelope

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request (e.g. a body that is not valid JSON): BAD_REQUEST",
    403: "Refused (host not allowed, cross-site request, path outside the import roots): FORBIDDEN",
    404: "The addressed resource does not exist: NOT_FOUND",
    409: "The request clashes with the current state (e.g. a run is training): CONFLICT",
    413: "Request body too large: PAYLOAD_TOO_LARGE",
    415: "Unsupported media type: UNSUPPORTED_MEDIA_TYPE",
    422: "Invalid input; details name the offending fields: VALIDATION_ERROR",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a handler: each status documented with the error envelope.

    400 is always included: Litestar documents one with its raw
    ``{status_code, detail}`` shape for any handler with parameters, and this
    replaces it with the envelope every error really comes in.
    """
    return {
        status: ResponseSpec(data_container=ErrorEnvelope, description=ERROR_DESCRIPTIONS[status], generate_examples=False)
        for status in sorted({400, *statuses})
    }


#: Class attribute of a request Struct: the sets of fields of which exactly one must be given (``oneOf``).
ONE_OF_REQUIRED = "__one_of_required__"

#: JSON Schema keywords msgspec enforces, and the ``Schema`` attribute each one lives in.
_CONSTRAINTS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMinimum": "exclusive_minimum",
    "exclusiveMaximum": "exclusive_maximum",
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "minItems": "min_items",
    "maxItems": "max_items",
}


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Request Structs document exactly what msgspec will accept.

    For Structs with ``forbid_unknown_fields=True`` (our request bodies) it
    adds ``additionalProperties: false``, and copies into each property the
    bounds msgspec itself enforces that Litestar's schema lost: a ``ge=0``
    (a falsy bound is dropped), and any bound inside ``X | None`` or
    ``A | list[B]`` unions. Both gaps were found by schema fuzzing (the
    document accepted what the server refused). Registered before Litestar's
    own Struct plugin; other Structs go to that one.

    An ``enum`` of ``[REGISTERED_TASKS]`` becomes the ids of the tasks
    registered now (``task_ids``): plugins add tasks, so no list written in
    the code can be right. A Struct whose fields go in alternative sets
    (``{"run_id"}`` or ``{"export_id"}``) says so in ``ONE_OF_REQUIRED``: the
    schema gets a ``oneOf`` of those ``required`` sets.
    """

    def __init__(self, task_ids: Callable[[], list[str]] = list) -> None:
        super().__init__()
        self.task_ids = task_ids

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        if not super().is_plugin_supported_field(field_definition):
            return False
        config = getattr(field_definition.type_, "__struct_config__", None)
        return bool(getattr(config, "forbid_unknown_fields", False))

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        schema.additional_properties = False
        alternatives = getattr(field_definition.type_, ONE_OF_REQUIRED, ())
        if alternatives:
            schema.one_of = [Schema(required=list(names)) for names in alternatives]
        hints = field_definition.get_type_hints(include_extras=True, resolve_generics=True)
        info = msgspec.inspect.type_info(field_definition.type_)
        for field in getattr(info, "fields", ()):
            target = (schema.properties or {}).get(field.encode_name)
            try:
                source = msgspec.json.schema(hints[field.name])
            except (TypeError, KeyError, ValueError):
                continue  # a type msgspec cannot describe: keep Litestar's schema
            if isinstance(target, Schema):
                _add_constraints(target, source)
                if target.enum == [REGISTERED_TASKS]:
                    target.enum = list(self.task_ids())
        return schema


class RecordSchemaPlugin(StructSchemaPlugin):
    """Records (``core/records.py``) are answered whole: every field is ``required`` in their schema.

    Their Python defaults only let an older record file read; the encoder
    writes every field of a record (none of them omits defaults), so a client
    can rely on each one being present, ``null`` where the type allows it.
    """

    def is_plugin_supported_field(self, field_definition: FieldDefinition) -> bool:
        type_ = field_definition.type_
        config = getattr(type_, "__struct_config__", None)
        return (super().is_plugin_supported_field(field_definition) and getattr(type_, "__module__", "") == records.__name__
                and not getattr(config, "omit_defaults", False))

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        schema.required = list(schema.properties or {})
        for prop in (schema.properties or {}).values():
            if isinstance(prop, Schema):
                prop.default = None  # what an old file lacks; an answer always carries the value itself
        return schema


def _add_constraints(target: Schema, source: dict[str, Any]) -> None:
    """Copy msgspec's bounds from ``source`` (a JSON Schema dict) into ``target`` where ``target`` has none."""
    branches = source.get("anyOf")
    alternatives = target.one_of or target.any_of
    if branches and alternatives:
        for branch in branches:
            match = next((alt for alt in alternatives if isinstance(alt, Schema) and _kind(alt) == _source_kind(branch)), None)
            if match is not None:
                _add_constraints(match, branch)
        return
    if alternatives and isinstance(source.get("items"), dict):
        # ``list[X] | UnsetType`` (an optional field of a partial body): msgspec leaves UNSET out of its schema,
        # Litestar wraps the one real alternative in ``oneOf``; the item bounds belong to that alternative
        for alternative in alternatives:
            if isinstance(alternative, Schema) and _kind(alternative) == "array":
                _add_constraints(alternative, source)
    for keyword, attribute in _CONSTRAINTS.items():
        if keyword in source and getattr(target, attribute) is None:
            setattr(target, attribute, source[keyword])
    if "enum" in source and source.get("type") == "string" and target.enum is None:
        # a plain ``str`` with an allow-list core declares in msgspec's schema (augmentation names); a Literal's
        # enum (no ``type`` in msgspec's schema) is Litestar's, in the order the code lists it
        target.enum = list(source["enum"])
    if isinstance(source.get("items"), dict) and isinstance(target.items, Schema):
        _add_constraints(target.items, source["items"])


def _kind(schema: Schema) -> str | None:
    if schema.enum is not None:
        return "enum"
    value = schema.type
    return getattr(value, "value", None) if value is not None and not isinstance(value, list) else None


def _source_kind(schema: dict[str, Any]) -> str | None:
    return "enum" if "enum" in schema else schema.get("type")


# -- documented-only rules ------------------------------------------------------------------------
# The services validate these with friendly messages; the schema states the same rule so generated
# clients (and schema fuzzing) know what the server accepts. msgspec does not enforce ``extra``.

#: ``core.projects.validate_name``: no control character (Cc), no '/' or '\\', not only whitespace.
#: Whitespace is spelled out (``str.isspace`` outside the controls) and surrogates (also refused) are
#: left out of the classes: with ``\s`` or a surrogate range inside a negated class schemathesis
#: silently ignored the whole pattern.
_NOT_ALLOWED = r"\u0000-\u001f\u007f-\u009f/\\"
_SPACE = r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NAME_PATTERN = f"^[^{_NOT_ALLOWED}]*[^{_NOT_ALLOWED}{_SPACE}][^{_NOT_ALLOWED}]*$"


def name_meta(max_length: int) -> msgspec.Meta:
    """A display name (project, experiment, split) of 1..``max_length`` characters."""
    return msgspec.Meta(min_length=1, max_length=max_length, extra_json_schema={"extra": {"pattern": NAME_PATTERN}})


#: ``core.projects.validate_description``: up to 5000 characters, no NUL.
DESCRIPTION_META = msgspec.Meta(max_length=5000, extra_json_schema={"extra": {"pattern": r"^[^\u0000]*$"}})


#: Placeholder enum of a task id field, filled with the registered tasks (``StrictStructSchemaPlugin``).
REGISTERED_TASKS = "<registered task ids>"


def documented(**rules: Any) -> msgspec.Meta:
    """Schema-only rules (``pattern``, ``enum``, ``exclusiveMinimum``...) checked by the service itself."""
    return msgspec.Meta(extra_json_schema={"extra": rules})


#: ``304`` of a conditional GET (``If-None-Match`` naming the current ETag): no body.
NOT_MODIFIED = {304: ResponseSpec(data_container=None, description="Not modified: the ETag in If-None-Match is current",
                                  generate_examples=False)}
