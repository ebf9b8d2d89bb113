"""Projects API (reference section 1)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import assert_error


def test_create_project_returns_envelope_with_id_and_timestamp(client) -> None:
    response = client.post("/api/projects", json={"name": "My Classification Project", "task": "classification"})
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "ok"
    data = body["data"]
    assert data["name"] == "My Classification Project"
    assert data["task"] == "classification"
    assert data["id"].startswith("proj-") and len(data["id"]) == 13
    assert data["created_at"].endswith("Z")


def test_created_project_is_listed_and_readable(client, project_id: str) -> None:
    listed = client.get("/api/projects").json()["data"]
    assert [p["id"] for p in listed] == [project_id]
    got = client.get(f"/api/projects/{project_id}").json()["data"]
    assert got["id"] == project_id and got["name"] == "Test project"


def test_unsupported_task_is_rejected_listing_supported_ones(client) -> None:
    error = assert_error(client.post("/api/projects", json={"name": "x", "task": "detection"}), 422, "VALIDATION_ERROR")
    assert error["details"]["available"] == ["classification"]
    assert error["details"]["field"] == "task"


def test_patch_updates_name_and_description(client, project_id: str) -> None:
    response = client.patch(f"/api/projects/{project_id}", json={"name": "Renamed", "description": "d"})
    assert response.status_code == 200
    assert response.json()["data"]["name"] == "Renamed"
    assert client.get(f"/api/projects/{project_id}").json()["data"]["description"] == "d"


def test_delete_removes_project_folder(client, project_id: str, workspace_dir: Path) -> None:
    assert (workspace_dir / "projects" / project_id).is_dir()
    response = client.delete(f"/api/projects/{project_id}")
    assert response.status_code == 200
    assert response.json()["data"] == {"id": project_id, "deleted": True}
    assert not (workspace_dir / "projects" / project_id).exists()
    assert_error(client.get(f"/api/projects/{project_id}"), 404, "NOT_FOUND")
