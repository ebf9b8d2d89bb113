"""Regression tests for what schema fuzzing found: the OpenAPI document must say what the server does.

Each test pins one finding of ``tests/reliability/test_schema_fuzz.py`` (fixed in the product).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.api.openapi import NAME_PATTERN
from modelyard.api.splits import SEED_MAX
from modelyard.core.errors import ValidationError
from modelyard.core.projects import validate_name
from tests.conftest import assert_error

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def document(client) -> dict[str, Any]:
    return client.get("/schema/openapi.json").json()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in document["paths"].items() for method, op in item.items() if method in METHODS]


def test_options_allow_header_lists_every_method_of_the_path(client, project_id) -> None:
    assert client.options("/api/projects").headers["allow"] == "GET, OPTIONS, POST"
    assert client.options(f"/api/projects/{project_id}").headers["allow"] == "DELETE, GET, OPTIONS, PATCH"


def test_every_operation_with_parameters_documents_its_error_statuses(document) -> None:
    """A path parameter can name nothing (404) or break its bounds (422); a JSON body can be malformed (400)."""
    missing = []
    for path, method, op in _operations(document):
        statuses = set(op["responses"])
        if "{" in path and not {"404", "422"} <= statuses:
            missing.append(f"{method.upper()} {path}: {sorted(statuses)}")
        if "application/json" in op.get("requestBody", {}).get("content", {}) and not {"400", "422"} <= statuses:
            missing.append(f"{method.upper()} {path} (body): {sorted(statuses)}")
    assert missing == []


def test_request_bodies_that_refuse_unknown_fields_say_so(client, document, project_id) -> None:
    schemas = document["components"]["schemas"]
    for name in ("ProjectCreate", "ProjectUpdate", "SplitCreate", "SplitRatios", "ExperimentCreate", "ImportLocal"):
        assert schemas[name]["additionalProperties"] is False, name
    upload = document["paths"]["/api/datasets/{project_id}/import/upload"]["post"]["requestBody"]["content"]
    assert upload["multipart/form-data"]["schema"]["additionalProperties"] is False
    assert_error(client.post("/api/projects", json={"name": "x", "colour": "red"}), 422, "VALIDATION_ERROR")
    extra_part = client.post(f"/api/datasets/{project_id}/import/upload",
                             files={"file": ("a.zip", b"PK", "application/zip"), "colour": (None, "red")})
    assert_error(extra_part, 422, "VALIDATION_ERROR")


def test_bounds_inside_optional_and_union_fields_are_documented(client, document, project_id) -> None:
    props = document["components"]["schemas"]["EvaluationCreate"]["properties"]
    split_index = next(branch for branch in props["split_index"]["oneOf"] if branch.get("type") == "integer")
    assert split_index["minimum"] == 0
    subsets = next(branch for branch in props["split_subset"]["oneOf"] if branch.get("type") == "array")
    assert subsets["minItems"] == 1
    body = {"experiment_id": "exp-00000000", "run_id": "run-00000000", "split_index": -1}
    assert_error(client.post(f"/api/evaluation/{project_id}", json=body), 422, "VALIDATION_ERROR")
    stream = document["paths"]["/api/training/{project_id}/runs/{run_id}/stream"]["get"]["parameters"]
    assert {p["name"]: p["schema"].get("minimum") for p in stream if "event" in p["name"].lower()} == {
        "Last-Event-ID": 0, "last_event_id": 0}


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=12))
def test_name_pattern_states_exactly_what_validate_name_accepts(name: str) -> None:
    try:
        validate_name(name)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (re.fullmatch(NAME_PATTERN, name) is not None)


@pytest.mark.parametrize("name", ["\tTabbed", "Trailing newline\n", "\x85Next line"])
def test_control_characters_are_refused_even_where_strip_would_drop_them(client, name: str) -> None:
    error = assert_error(client.post("/api/projects", json={"name": name}), 422, "VALIDATION_ERROR")
    assert "control characters" in error["message"]


def test_names_tasks_and_paths_document_their_rules(document) -> None:
    schemas = document["components"]["schemas"]
    for struct, field in (("ProjectCreate", "name"), ("ExperimentCreate", "name"), ("SplitCreate", "name")):
        assert schemas[struct]["properties"][field]["pattern"] == NAME_PATTERN, struct
    assert schemas["ProjectCreate"]["properties"]["task"]["enum"] == ["classification", "object_detection"]
    assert re.fullmatch(schemas["ImportLocal"]["properties"]["path"]["pattern"], "/data/shapes")
    assert not re.fullmatch(schemas["ImportLocal"]["properties"]["path"]["pattern"], "data/shapes")
    images = document["paths"]["/api/datasets/{project_id}/images"]["get"]["parameters"]
    pattern = next(p for p in images if p["name"] == "filter_split")["schema"]["pattern"]
    assert re.fullmatch(pattern, "0:train") and re.fullmatch(pattern, "") and not re.fullmatch(pattern, "train")


def test_relative_local_import_path_is_refused(client, project_id) -> None:
    response = client.post(f"/api/datasets/{project_id}/import/local", json={"path": "relative/folder"})
    assert "absolute" in assert_error(response, 422, "VALIDATION_ERROR")["message"]


def test_split_ratio_and_seed_bounds_are_documented_and_exact(client, document, project_id) -> None:
    ratios = document["components"]["schemas"]["SplitRatios"]["properties"]
    assert (ratios["train"]["exclusiveMinimum"], ratios["val"]["minimum"], ratios["test"]["minimum"]) == (0, 0, 0)
    assert document["components"]["schemas"]["SplitCreate"]["properties"]["seed"]["maximum"] == SEED_MAX
    preview = f"/api/splits/{project_id}/preview"
    assert client.get(preview, params={"seed": SEED_MAX}).status_code == 200
    assert_error(client.get(preview, params={"seed": SEED_MAX + 1}), 422, "VALIDATION_ERROR")
    assert_error(client.get(preview, params={"val": -0.1}), 422, "VALIDATION_ERROR")


def test_image_endpoints_document_image_content_and_not_modified(document) -> None:
    for path in ("/api/datasets/{project_id}/images/{filename}", "/api/datasets/{project_id}/thumbnails/{filename}"):
        responses = document["paths"][path]["get"]["responses"]
        assert list(responses["200"]["content"]) == ["image/*"]
        assert "304" in responses


def test_unknown_model_name_is_not_found(client, document) -> None:
    assert "404" in document["paths"]["/api/training/models/{name}"]["get"]["responses"]
    error = assert_error(client.get("/api/training/models/no_such_net"), 404, "NOT_FOUND")
    assert "simple_cnn" in error["details"]["available"]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with ``$ref`` followed and the ``oneOf`` of an optional (``X | unset``) field reduced to ``X``."""
    if "$ref" in schema:
        return _resolve(document, document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    for key in ("oneOf", "anyOf"):
        if len(schema.get(key, [])) == 1:
            rest = {k: v for k, v in schema.items() if k != key}
            return {**_resolve(document, schema[key][0]), **rest}
    return schema


def test_the_experiment_config_is_described_in_full_and_refuses_unknown_fields(document) -> None:
    """Every config section and field, bounds and allowed values included; nothing else is accepted."""
    for path, method in (("/api/training/{project_id}/experiments", "post"),
                         ("/api/training/{project_id}/experiments/{exp_id}", "patch")):
        body = _resolve(document, document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])
        config = _resolve(document, body["properties"]["config"])
        assert config["additionalProperties"] is False and not config.get("required")
        assert set(config["properties"]) == {"split_index", "model", "data", "training", "hardware",
                                             "logging", "callbacks"}  # the last two: hook API 0.3 plugins
        logging = _resolve(document, config["properties"]["logging"])
        assert logging.get("type") == "object"  # {logger name: options or null}
        callbacks = _resolve(document, config["properties"]["callbacks"])
        assert callbacks.get("type") == "array"
        training = _resolve(document, config["properties"]["training"])
        assert training["additionalProperties"] is False
        optimizer = _resolve(document, training["properties"]["optimizer"])
        assert optimizer["additionalProperties"] is False
        assert set(_resolve(document, optimizer["properties"]["name"]).get("enum", [])) == {"sgd", "adam", "adamw"}
        lr = _resolve(document, optimizer["properties"]["lr"])
        assert lr.get("exclusiveMinimum") == 0 and lr.get("maximum") == 10


def test_an_unknown_config_field_is_refused_with_its_path(client, project_id) -> None:
    body = {"name": "x", "config": {"training": {"optimizer": {"learning_rate": 0.1}}}}
    response = client.post(f"/api/training/{project_id}/experiments", json=body)
    assert assert_error(response, 422, "VALIDATION_ERROR")["details"]["field"] == "config.training.optimizer.learning_rate"


def test_the_upload_declares_that_it_takes_a_zip(document) -> None:
    content = document["paths"]["/api/datasets/{project_id}/import/upload"]["post"]["requestBody"]["content"]
    form = content["multipart/form-data"]
    assert form["encoding"]["file"]["contentType"] == "application/zip"
    assert form["schema"]["properties"]["file"]["contentMediaType"] == "application/zip"
