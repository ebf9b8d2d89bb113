"""Export options: apply an exporter's JSON-schema defaults and check what the user sent.

Every exporter declares ``options_schema`` (a JSON schema object whose
properties carry defaults). ``resolve_options`` is what core calls before an
export so that a typo or a wrong type is a 422 naming ``options.<name>``, not a
failed job half an hour later. It supports the subset of JSON schema that
option schemas need: ``type`` (one or a list of integer, number, boolean,
string, array, object, null), ``enum``, ``minimum``, ``maximum``, ``items``,
``minItems``, ``maxItems``, ``properties``, ``additionalProperties``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .errors import ValidationError
from .plugin_types import Exporter

_TYPE_CHECKS = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def option_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The ``default`` of every property in ``schema`` (deep copies, safe to mutate)."""
    properties = schema.get("properties", {})
    return {name: copy.deepcopy(prop["default"]) for name, prop in properties.items() if "default" in prop}


def resolve_options(exporter: Exporter, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults of ``exporter``'s schema overlaid with ``options``, validated.

    Raises ``ValidationError`` with ``field="options.<name>"`` for an unknown
    option or a value of the wrong type or range.
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ValidationError(f"options must be an object, got {type(options).__name__}", field="options")
    schema = exporter.options_schema
    properties: Mapping[str, Any] = schema.get("properties", {})
    unknown = sorted(set(options) - set(properties))
    if unknown:
        raise ValidationError(
            f"Unknown option '{unknown[0]}' for export format '{exporter.id}'. Known: {', '.join(sorted(properties)) or '(none)'}",
            field=f"options.{unknown[0]}",
            details={"known": sorted(properties)},
        )
    resolved = option_defaults(schema)
    for name, value in options.items():
        check_value(value, properties[name], f"options.{name}")
        resolved[name] = copy.deepcopy(value)
    missing = [name for name in schema.get("required", []) if name not in resolved]
    if missing:
        raise ValidationError(f"Option '{missing[0]}' is required", field=f"options.{missing[0]}")
    return resolved


def check_value(value: Any, schema: Mapping[str, Any], field: str) -> None:
    """Validate ``value`` against one (sub)schema; errors name ``field`` (dotted path)."""
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        if not any(_TYPE_CHECKS[t](value) for t in allowed if t in _TYPE_CHECKS):
            raise ValidationError(f"{field} must be {' or '.join(allowed)}, got {_describe(value)}", field=field)
    if "enum" in schema and value not in schema["enum"]:
        raise ValidationError(f"{field} must be one of {schema['enum']}, got {value!r}", field=field)
    if _TYPE_CHECKS["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValidationError(f"{field} must be >= {schema['minimum']}, got {value}", field=field)
        if "maximum" in schema and value > schema["maximum"]:
            raise ValidationError(f"{field} must be <= {schema['maximum']}, got {value}", field=field)
    if isinstance(value, list):
        _check_array(value, schema, field)
    elif isinstance(value, dict):
        _check_object(value, schema, field)


def _check_array(value: list[Any], schema: Mapping[str, Any], field: str) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        raise ValidationError(f"{field} must have at least {schema['minItems']} items, got {len(value)}", field=field)
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        raise ValidationError(f"{field} must have at most {schema['maxItems']} items, got {len(value)}", field=field)
    if isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            check_value(item, schema["items"], f"{field}.{index}")


def _check_object(value: dict[str, Any], schema: Mapping[str, Any], field: str) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    additional = schema.get("additionalProperties", True)
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValidationError(f"{field} keys must be strings", field=field)
        if key in properties:
            check_value(item, properties[key], f"{field}.{key}")
        elif additional is False:
            raise ValidationError(f"{field} has no key '{key}'. Known: {', '.join(sorted(properties))}", field=f"{field}.{key}")
        elif isinstance(additional, Mapping):
            check_value(item, additional, f"{field}.{key}")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return f"{names.get(type(value), type(value).__name__)} {value!r}"[:80]
