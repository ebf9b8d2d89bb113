"""Every endpoint that takes a JSON body refuses any other content type with 415 (a forged cross-site form)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import assert_error

FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")


def _json_operations(client, but_not: str | None = None) -> list[tuple[str, str]]:
    """``(method, path)`` of every operation whose request body is documented as JSON, path ids filled in.

    ``but_not``: leave out operations that also document this media type (predict takes multipart images or JSON).
    """
    schema = client.get("/schema/openapi.json").json()
    found = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            content = (operation.get("requestBody") or {}).get("content") or {}
            if "application/json" in content and but_not not in content:
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "proj-00000000", path)))
    return found


def test_the_json_endpoints_are_found(client) -> None:
    operations = _json_operations(client)
    assert ("POST", "/api/projects") in operations
    assert ("POST", "/api/datasets/proj-00000000/import/local") in operations
    assert ("POST", "/api/evaluation/proj-00000000") in operations and len(operations) >= 8


@pytest.mark.parametrize("content_type", FORM_TYPES)
def test_every_json_endpoint_refuses_a_body_of_another_type(client, content_type: str) -> None:
    for method, path in _json_operations(client, but_not=content_type.split(";")[0]):
        response = client.request(method, path, content=b'{"name": "forged"}', headers={"content-type": content_type})
        error = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert "application/json" in error["message"], (method, path)
    assert client.get("/api/projects").json()["data"] == []  # nothing was created


def test_json_with_a_charset_or_a_json_suffix_type_is_accepted(client) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8", "application/merge-patch+json"):
        response = client.post("/api/projects", content=b'{"name": "ok"}', headers={"content-type": content_type})
        assert response.status_code == 201, (content_type, response.text)


def test_the_zip_upload_still_takes_multipart(client, project_id) -> None:
    response = client.post(f"/api/datasets/{project_id}/import/upload", files={"file": ("a.zip", b"PK\x05\x06" + b"\0" * 18)})
    assert response.status_code != 415, response.text
