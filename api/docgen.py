"""``docs/api.md`` from the app's own OpenAPI document, so the reference cannot drift from the code.

Run ``python -m modelyard.api.docgen > docs/api.md`` after changing an
endpoint; ``tests/test_docs.py`` fails while the file differs from what this
prints. The document comes from ``create_app`` over a throw-away workspace,
exactly as a server would serve it at ``/schema/openapi.json``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from typing import Any

METHODS: tuple[str, ...] = ("get", "post", "put", "patch", "delete")
#: Sections in the order of the endpoint reference; tags not listed follow alphabetically.
TAG_ORDER: tuple[str, ...] = ("Projects", "Datasets", "Splits", "Experiments", "Runs", "Training", "Evaluation",
                              "Export", "System")
_SCHEMA_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
_MODULE_PATH = re.compile(r"(?:(?<=_)|^)(?:[a-z][a-z0-9_]*\.)+(?=[A-Za-z_])")

HEADER = """\
# modelyard REST API reference

Generated from the OpenAPI document of the running code by
`python -m modelyard.api.docgen > docs/api.md`; do not edit by hand
(`tests/test_docs.py` fails when this file is stale). A live server serves the
same document at `/schema/openapi.json`, with Swagger UI at `/schema/swagger`.

Conventions (DESIGN section 2):

- Every response under `/api` is an envelope. Success: `{"status": "ok", "data": ...}`
  (`Ok[T]` below is that envelope around `T`). Error:
  `{"status": "error", "error": {"code", "message", "details"}}` (`ErrorEnvelope`).
- Error codes: `VALIDATION_ERROR` 422 (details name the offending field paths),
  `NOT_FOUND` 404, `CONFLICT` 409, `PAYLOAD_TOO_LARGE` 413,
  `UNSUPPORTED_MEDIA_TYPE` 415, `FORBIDDEN` 403, `INTERNAL_ERROR` 500.
- Paginated lists (`Page[T]`): `{"items", "page", "page_size", "total", "pages"}`.
- Request bodies reject unknown fields (422). IDs look like `proj-a1b2c3d4`.
- Long jobs (runs, evaluations, exports) answer at once with status `pending`;
  poll the `GET` endpoint or follow the run's SSE stream.
"""


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of an app built by ``create_app`` over a temporary workspace."""
    from modelyard.core.settings import Settings

    from .app import create_app

    with tempfile.TemporaryDirectory(prefix="modelyard-docgen-") as folder:
        app = create_app(Settings(workspace=folder))
        return app.openapi_schema.to_schema()  # type: ignore[no-any-return]


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(METHOD, path, operation)`` for every operation, in the reference's section order."""
    found = []
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                found.append((method.upper(), path, item[method]))

    def key(entry: tuple[str, str, dict[str, Any]]) -> tuple[int, str, str, int]:
        method, path, operation = entry
        tag = (operation.get("tags") or ["Other"])[0]
        rank = TAG_ORDER.index(tag) if tag in TAG_ORDER else len(TAG_ORDER)
        return rank, tag, path, METHODS.index(method.lower())

    return sorted(found, key=key)


def type_name(schema: dict[str, Any] | None) -> str:
    """A short human type for a JSON schema (``list[Project]``, ``"asc" | "desc"``, ``integer``)."""
    if not schema:
        return "any"
    if "$ref" in schema:
        return pretty_name(schema["$ref"].rsplit("/", 1)[-1])
    for combiner in ("oneOf", "anyOf"):
        if combiner in schema:
            return " | ".join(dict.fromkeys(type_name(option) for option in schema[combiner]))
    if "enum" in schema:
        return " | ".join(f"`{value}`" if value is not None else "null" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " | ".join(type_name({**schema, "type": k}) for k in kind)
    if kind == "array":
        return f"list[{type_name(schema.get('items'))}]"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict) and schema["additionalProperties"]:
        return f"dict[str, {type_name(schema['additionalProperties'])}]"
    if schema.get("format") in ("binary", "date-time"):
        return f"{kind} ({schema['format']})"
    return str(kind)


def pretty_name(name: str) -> str:
    """``Ok_modelyard.api.projects.Project_`` -> ``Ok[Project]``; ``Ok_list_X_`` -> ``Ok[list[X]]``.

    A schema's own name links to its section under "Schemas".
    """
    name = _MODULE_PATH.sub("", name)
    for wrapper in ("Ok", "Page", "list"):
        if name.startswith(wrapper + "_") and name.endswith("_"):
            return f"{wrapper}[{pretty_name(name[len(wrapper) + 1 : -1])}]"
    return f"[{name}](#{name.lower()})" if _SCHEMA_NAME.fullmatch(name) else name


def _limits(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
                       ("minLength", "min length"), ("maxLength", "max length"), ("minItems", "min items"),
                       ("maxItems", "max items")):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    return ", ".join(parts)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(schema: dict[str, Any]) -> str:
    return f"`{_json(schema['default'])}`" if "default" in schema else ""


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def fields_table(schema: dict[str, Any]) -> list[str]:
    """A markdown table of an object schema's properties."""
    properties = schema.get("properties") or {}
    if not properties:
        return []
    required = set(schema.get("required") or [])
    lines = ["| Field | Type | Required | Default | Description |", "|---|---|---|---|---|"]
    for name, prop in properties.items():
        description = "; ".join(filter(None, [prop.get("description", ""), _limits(prop)]))
        lines.append(f"| `{name}` | {_cell(type_name(prop))} | {'yes' if name in required else 'no'} | "
                     f"{_cell(_default(prop))} | {_cell(description)} |")
    return lines


def render_operation(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    lines = [f"### `{method} {path}`", "", f"{operation.get('summary', '')}. Operation id: `{operation.get('operationId')}`."]
    if operation.get("description"):
        lines += ["", " ".join(operation["description"].split())]
    parameters = operation.get("parameters") or []
    if parameters:
        lines += ["", "| Parameter | In | Type | Required | Default | Description |", "|---|---|---|---|---|---|"]
        for parameter in parameters:
            schema = parameter.get("schema") or {}
            description = "; ".join(filter(None, [parameter.get("description", ""), _limits(schema)]))
            lines.append(f"| `{parameter['name']}` | {parameter.get('in')} | {_cell(type_name(schema))} | "
                         f"{'yes' if parameter.get('required') else 'no'} | {_cell(_default(schema))} | {_cell(description)} |")
    body = operation.get("requestBody")
    if body:
        for media_type, content in (body.get("content") or {}).items():
            schema = content.get("schema") or {}
            lines += ["", f"Request body (`{media_type}`): {type_name(schema)}"]
            if "$ref" not in schema:
                lines += [""] + fields_table(schema)
    responses = operation.get("responses") or {}
    lines += ["", "| Status | Body | Meaning |", "|---|---|---|"]
    for status in sorted(responses):
        response = responses[status]
        content = response.get("content") or {}
        bodies = [f"{type_name(c.get('schema'))} (`{media}`)" if media != "application/json" else type_name(c.get("schema"))
                  for media, c in content.items()]
        lines.append(f"| {status} | {_cell(', '.join(bodies) or '-')} | {_cell(response.get('description', ''))} |")
    return lines + [""]


def render(document: dict[str, Any]) -> str:
    """The whole ``docs/api.md`` text."""
    ops = operations(document)
    lines = [HEADER, "## Endpoints", "", "| Method | Path | Summary |", "|---|---|---|"]
    lines += [f"| `{method}` | `{path}` | {_cell(op.get('summary', ''))} |" for method, path, op in ops]
    current_tag = None
    for method, path, operation in ops:
        tag = (operation.get("tags") or ["Other"])[0]
        if tag != current_tag:
            lines += ["", f"## {tag}", ""]
            current_tag = tag
        lines += render_operation(method, path, operation)
    lines += ["## Schemas", "", "The bodies named above (the `Ok[...]` and `Page[...]` wrappers are described at the top).", ""]
    for name, schema in sorted((document.get("components") or {}).get("schemas", {}).items()):
        if name.startswith(("Ok_", "Page_")):
            continue
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [" ".join(schema["description"].split()), ""]
        table = fields_table(schema)
        lines += (table or [f"Type: {type_name(schema)}"]) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render(openapi_document()))


if __name__ == "__main__":
    main()
