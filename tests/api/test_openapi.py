"""The OpenAPI document describes every /api endpoint with our real request, response and error types."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar import Litestar

from modelyard.api.openapi import NAME_PATTERN

PASCAL_CASE = re.compile(r"^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*$")
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def document(client) -> dict[str, Any]:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    return document["components"]["schemas"][ref.rsplit("/", 1)[-1]] if ref else schema


def test_document_is_openapi_3_1_titled_modelyard(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "modelyard"


def test_every_api_route_is_documented(app: Litestar, document: dict[str, Any]) -> None:
    documented = {(path, method.upper()) for path, method, _ in _operations(document)}
    routed = {
        (re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path).rstrip("/") or "/", method)
        for route in app.routes
        if route.path.startswith("/api")
        for method in getattr(route, "methods", set())
        if method.lower() in HTTP_METHODS
    }
    assert routed, "no /api routes found"
    assert routed <= documented, routed - documented


def test_projects_and_system_endpoints_have_their_operation_ids(document: dict[str, Any]) -> None:
    ids = {(path, method): op["operationId"] for path, method, op in _operations(document)}
    assert {
        ("/api/projects", "get"): "ListProjects",
        ("/api/projects", "post"): "CreateProject",
        ("/api/projects/{project_id}", "get"): "GetProject",
        ("/api/projects/{project_id}", "patch"): "UpdateProject",
        ("/api/projects/{project_id}", "delete"): "DeleteProject",
        ("/api/system/health", "get"): "GetHealth",
        ("/api/system/devices", "get"): "ListDevices",
        ("/api/system/workspace", "get"): "GetWorkspaceStats",
    }.items() <= ids.items()


def test_every_operation_id_is_unique_pascal_case(document: dict[str, Any]) -> None:
    ids = [op.get("operationId", "") for path, _, op in _operations(document) if path.startswith("/api")]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if not PASCAL_CASE.match(i)] == []


def test_create_project_body_is_the_project_create_struct(document: dict[str, Any]) -> None:
    body = document["paths"]["/api/projects"]["post"]["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ProjectCreate"}
    create = _resolve(document, schema)
    assert create["required"] == ["name"]
    # the pattern states validate_name's rule (found by schema fuzzing, tests/reliability/test_schema_fuzz.py)
    assert create["properties"]["name"] == {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NAME_PATTERN}
    assert set(create["properties"]) == {"name", "task", "description"}


def test_update_project_body_has_only_optional_fields(document: dict[str, Any]) -> None:
    schema = document["paths"]["/api/projects/{project_id}"]["patch"]["requestBody"]["content"]["application/json"]
    update = _resolve(document, schema["schema"])
    assert set(update["properties"]) == {"name", "task", "description"}
    assert not update.get("required")


def test_success_responses_are_the_ok_envelope_around_our_structs(document: dict[str, Any]) -> None:
    created = document["paths"]["/api/projects"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    envelope = _resolve(document, created)
    assert set(envelope["properties"]) == {"data", "status"}
    assert envelope["properties"]["data"] == {"$ref": "#/components/schemas/Project"}
    project = document["components"]["schemas"]["Project"]
    assert set(project["required"]) == {"id", "name", "task", "description", "created_at", "updated_at"}
    devices = _resolve(document, document["paths"]["/api/system/devices"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"])
    assert devices["properties"]["data"] == {"$ref": "#/components/schemas/Devices"}


def test_project_error_responses_are_documented_with_real_statuses(document: dict[str, Any]) -> None:
    expected = {
        ("/api/projects", "post"): {"201", "400", "413", "422"},
        ("/api/projects/{project_id}", "get"): {"200", "400", "404", "409", "422"},
        ("/api/projects/{project_id}", "patch"): {"200", "400", "404", "409", "413", "422"},
        ("/api/projects/{project_id}", "delete"): {"200", "400", "404", "409", "422"},
    }
    for (path, method), statuses in expected.items():
        assert set(document["paths"][path][method]["responses"]) == statuses, (path, method)


#: Controllers whose handlers declare ``responses=error_responses(...)``; add each one as it adopts the helper.
ENVELOPE_DOCUMENTED = ("/api/",)  # every endpoint


def test_error_responses_are_the_error_envelope(document: dict[str, Any]) -> None:
    """No Litestar default ``{status_code, detail}`` shape: what the doc promises is what clients get."""
    wrong = []
    for path, method, operation in _operations(document):
        if not path.startswith(ENVELOPE_DOCUMENTED):
            continue
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if schema != {"$ref": "#/components/schemas/ErrorEnvelope"}:
                wrong.append(f"{method.upper()} {path} {status}")
    assert wrong == []
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    assert set(envelope["properties"]) == {"error", "status"}
    body = _resolve(document, envelope["properties"]["error"])
    assert set(body["properties"]) == {"code", "message", "details"}
