"""The one JSON error shape, pinned for every error class the API can answer.

``{"status": "error", "error": {"code", "message", "details"}}`` with the
status DESIGN section 2 gives each code, whether the error comes from our
domain, from Litestar (routing, parsing, validation), from the host check or
from a bug.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from litestar.testing import TestClient

from modelyard.api.app import create_app
from modelyard.api.errors import STATUS_BY_CODE
from modelyard.core import errors
from modelyard.core.settings import Settings
from tests.conftest import BASE_URL, assert_error

#: DESIGN section 2: the wire codes and their HTTP statuses.
DESIGN_STATUS = {
    "VALIDATION_ERROR": 422,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "FORBIDDEN": 403,
    "INTERNAL_ERROR": 500,
}


def assert_envelope_shape(response) -> dict:
    """Exactly the documented keys, with the documented types."""
    body = response.json()
    assert set(body) == {"status", "error"}, body
    assert body["status"] == "error"
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and error["code"].isupper()
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    assert response.headers["content-type"].startswith("application/json")
    return error


def _all_subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_all_subclasses(direct))]


def test_design_codes_map_to_design_statuses() -> None:
    for code, status in DESIGN_STATUS.items():
        assert STATUS_BY_CODE[code] == status, code


@pytest.mark.parametrize("error_class", _all_subclasses(errors.ModelyardError), ids=lambda c: c.__name__)
def test_every_domain_error_class_has_a_mapped_status(error_class: type[errors.ModelyardError]) -> None:
    """A new error code without a status would silently become a 400; each must be mapped on purpose."""
    assert error_class.code in STATUS_BY_CODE


# -- Litestar's own errors ---------------------------------------------------------------------


def test_unknown_route_is_not_found_envelope(client) -> None:
    error = assert_error(client.get("/api/no-such-thing"), 404, "NOT_FOUND")
    assert_envelope_shape(client.get("/api/no-such-thing"))
    assert "/api/no-such-thing" in error["message"]


def test_wrong_method_is_405_envelope_with_allow_header(client) -> None:
    response = client.put("/api/projects", json={"name": "x"})
    error = assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert_envelope_shape(response)
    assert "PUT" in error["message"]
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["allow"].split(",")}


def test_malformed_json_is_400_bad_request(client) -> None:
    response = client.post("/api/projects", content=b'{"name": "x",', headers={"content-type": "application/json"})
    error = assert_error(response, 400, "BAD_REQUEST")
    assert_envelope_shape(response)
    assert "malformed" in error["message"].lower() or "truncated" in error["message"].lower()


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a":', "}")], ids=["arrays", "objects"])
def test_json_nested_deeper_than_the_decoder_recurses_is_400_not_500(client, opening: str, closing: str) -> None:
    depth = 100_000
    body = '{"name": "x", "description": ' + opening * depth + "1" * (opening == '{"a":') + closing * depth + "}"
    response = client.post("/api/projects", content=body.encode(), headers={"content-type": "application/json"})
    error = assert_error(response, 400, "BAD_REQUEST")
    assert_envelope_shape(response)
    assert "nested too deeply" in error["message"]


def test_wrong_type_is_422_naming_the_field(client) -> None:
    response = client.post("/api/projects", json={"name": 5})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert_envelope_shape(response)
    assert error["details"]["fields"] == ["name"]
    assert error["details"]["errors"][0]["source"] == "body"


def test_missing_required_field_is_422_naming_the_field(client) -> None:
    error = assert_error(client.post("/api/projects", json={"task": "classification"}), 422, "VALIDATION_ERROR")
    assert error["details"]["fields"] == ["name"]
    assert "name" in error["message"]


def test_unknown_field_is_422_naming_the_field(client) -> None:
    error = assert_error(client.post("/api/projects", json={"name": "x", "colour": "red"}), 422, "VALIDATION_ERROR")
    assert error["details"]["fields"] == ["colour"]
    assert "colour" in error["message"]


def test_empty_body_is_422_saying_a_body_is_required(client) -> None:
    response = client.post("/api/projects", headers={"content-type": "application/json"})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["message"] == "A JSON request body is required"
    assert error["details"]["fields"] == ["body"]


def test_body_of_the_wrong_shape_is_422_on_the_body(client) -> None:
    error = assert_error(client.post("/api/projects", json=["name", "x"]), 422, "VALIDATION_ERROR")
    assert error["details"]["fields"] == ["body"]


def test_path_parameter_out_of_bounds_is_422_naming_it(client) -> None:
    error = assert_error(client.get("/api/projects/proj-" + "a" * 100), 422, "VALIDATION_ERROR")
    assert error["details"]["fields"] == ["project_id"]
    assert error["details"]["errors"][0]["source"] == "path"


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    app = create_app(Settings(workspace=tmp_path / "ws", max_request_bytes=1024))
    with TestClient(app, base_url=BASE_URL) as small_client:
        response = small_client.post("/api/projects", json={"name": "x", "description": "d" * 4000})
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")
        assert_envelope_shape(response)
    assert list((tmp_path / "ws" / "projects").iterdir()) == []


# -- domain errors through real endpoints ------------------------------------------------------


def test_domain_not_found_names_the_resource(client) -> None:
    response = client.get("/api/projects/proj-00000000")
    error = assert_error(response, 404, "NOT_FOUND")
    assert_envelope_shape(response)
    assert error["message"] == "Project proj-00000000 not found"
    assert error["details"] == {"resource": "project", "project_id": "proj-00000000"}


def test_domain_validation_error_names_the_field(client) -> None:
    error = assert_error(client.post("/api/projects", json={"name": "a/b"}), 422, "VALIDATION_ERROR")
    assert error["details"] == {"field": "name"}


def test_domain_conflict_is_409_with_details(client, project_id: str, training_run: Path) -> None:
    response = client.delete(f"/api/projects/{project_id}")
    error = assert_error(response, 409, "CONFLICT")
    assert_envelope_shape(response)
    assert error["details"] == {"active_runs": [training_run.name]}


def test_corrupt_workspace_file_is_409_naming_the_file_not_500(client, workspace_dir: Path, project_id: str) -> None:
    (workspace_dir / "projects" / project_id / "project.json").write_text('{"id": "proj-')
    error = assert_error(client.get(f"/api/projects/{project_id}"), 409, "CONFLICT")
    assert error["details"] == {"file": "project.json"}


def test_host_check_refusal_is_403_envelope(client) -> None:
    response = client.get("/api/projects", headers={"host": "evil.example"})
    assert_error(response, 403, "FORBIDDEN")
    assert_envelope_shape(response)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.UnsupportedMediaTypeError("Only ZIP uploads are accepted", {"content_type": "text/plain"}), 415),
        (errors.ForbiddenError("Path is outside the import roots", {"path": "/etc"}), 403),
        (errors.PayloadTooLargeError("Upload exceeds 10 GiB", {"limit_bytes": 10}), 413),
        (errors.PluginError("Duplicate architecture 'x'", {"name": "x"}), 500),
        (errors.UnknownArchitectureError("resnet9000", ["resnet18", "simple_cnn"], field="model.architecture"), 422),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_domain_errors_without_a_project_endpoint_keep_code_message_and_details(
    client, services, monkeypatch: pytest.MonkeyPatch, error: errors.ModelyardError, status: int
) -> None:
    """Errors raised by other services (uploads, imports, plugins) reach the client the same way."""

    def raise_it() -> None:
        raise error

    monkeypatch.setattr(services.projects, "list", raise_it)
    response = client.get("/api/projects")
    body = assert_error(response, status, error.code)
    assert_envelope_shape(response)
    assert body["message"] == error.message
    assert body["details"] == error.details


# -- bugs ------------------------------------------------------------------------------------


def test_unhandled_exception_is_generic_500_and_traceback_goes_to_the_log(
    client, services, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> None:
        raise RuntimeError("secret path /home/alice/.ssh/id_rsa")

    monkeypatch.setattr(services.projects, "list", explode)
    with caplog.at_level(logging.ERROR, logger="modelyard.api"):
        response = client.get("/api/projects")
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert_envelope_shape(response)
    assert error["message"] == "Internal server error"
    assert error["details"] == {}
    assert "secret" not in response.text and "RuntimeError" not in response.text
    logged = [r for r in caplog.records if r.name == "modelyard.api" and r.exc_info]
    assert logged, "the traceback must reach the server log"
    assert logged[0].exc_info[0] is RuntimeError
    assert "GET /api/projects" in logged[0].getMessage()
