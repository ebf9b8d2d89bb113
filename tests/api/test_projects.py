"""Projects API (reference section 1)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import assert_error
from tests.helpers.datasets import write_shapes_dataset
from tests.helpers.run_fixtures import make_run_folder


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
    assert error["details"]["available"] == ["classification", "object_detection"]
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


def test_create_defaults_to_classification_and_stores_project_json(client, workspace_dir: Path) -> None:
    data = client.post("/api/projects", json={"name": "Shapes"}).json()["data"]
    assert data["task"] == "classification"
    assert data["description"] == ""
    on_disk = json.loads((workspace_dir / "projects" / data["id"] / "project.json").read_text(encoding="utf-8"))
    assert on_disk == data


def test_name_of_exactly_200_characters_is_accepted_201_is_not(client) -> None:
    assert client.post("/api/projects", json={"name": "n" * 200}).status_code == 201
    error = assert_error(client.post("/api/projects", json={"name": "n" * 201}), 422, "VALIDATION_ERROR")
    assert error["details"]["fields"] == ["name"]


def test_list_is_empty_envelope_without_projects(client) -> None:
    assert client.get("/api/projects").json() == {"status": "ok", "data": []}


def test_patch_of_unknown_project_is_404(client) -> None:
    assert_error(client.patch("/api/projects/proj-00000000", json={"name": "x"}), 404, "NOT_FOUND")


def test_patch_with_unknown_field_is_422_and_changes_nothing(client, project_id: str) -> None:
    error = assert_error(
        client.patch(f"/api/projects/{project_id}", json={"name": "New", "id": "proj-hijacked"}), 422, "VALIDATION_ERROR"
    )
    assert error["details"]["fields"] == ["id"]
    assert client.get(f"/api/projects/{project_id}").json()["data"]["name"] == "Test project"


def test_patch_to_an_unsupported_task_is_422_listing_supported_ones(client, project_id: str) -> None:
    error = assert_error(client.patch(f"/api/projects/{project_id}", json={"task": "detection"}), 422, "VALIDATION_ERROR")
    assert error["details"]["available"] == ["classification", "object_detection"]


def test_patch_task_is_allowed_while_the_project_has_no_dataset(client, project_id: str, second_task: str) -> None:
    response = client.patch(f"/api/projects/{project_id}", json={"task": second_task})
    assert response.status_code == 200, response.text
    assert client.get(f"/api/projects/{project_id}").json()["data"]["task"] == second_task


def test_patch_task_is_refused_409_once_the_project_has_a_dataset(
    client, services, project_id: str, second_task: str
) -> None:
    write_shapes_dataset(services.workspace.project_dir(project_id), per_class=1, size=16, num_classes=1)
    error = assert_error(client.patch(f"/api/projects/{project_id}", json={"task": second_task}), 409, "CONFLICT")
    assert "dataset" in error["message"]
    assert client.get(f"/api/projects/{project_id}").json()["data"]["task"] == "classification"
    # Name and description stay editable.
    assert client.patch(f"/api/projects/{project_id}", json={"name": "Renamed"}).status_code == 200


def test_delete_is_refused_409_while_a_run_is_training(client, project_id: str, training_run: Path) -> None:
    error = assert_error(client.delete(f"/api/projects/{project_id}"), 409, "CONFLICT")
    assert error["details"]["active_runs"] == [training_run.name]
    assert (training_run / "run.json").is_file()
    assert client.get(f"/api/projects/{project_id}").status_code == 200


def test_delete_succeeds_once_the_run_has_finished(client, services, project_id: str, workspace_dir: Path) -> None:
    make_run_folder(services.workspace, project_id, status="completed")
    assert client.delete(f"/api/projects/{project_id}").status_code == 200
    assert not (workspace_dir / "projects" / project_id).exists()
    assert list((workspace_dir / ".staging").iterdir()) == []


def test_delete_twice_is_404_the_second_time(client, project_id: str) -> None:
    assert client.delete(f"/api/projects/{project_id}").status_code == 200
    assert_error(client.delete(f"/api/projects/{project_id}"), 404, "NOT_FOUND")


def test_a_task_a_plugin_registers_through_register_tasks_can_be_chosen_and_is_in_the_schema(
        client, second_task: str) -> None:
    response = client.post("/api/projects", json={"name": "counts", "task": second_task})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["task"] == second_task
    schema = create_app_schema_task_enum(client)
    assert schema == sorted(["classification", "object_detection", second_task])
    plugins = {p["name"]: p for p in client.get("/api/system/plugins").json()["data"]}
    assert plugins["second-task"]["registered"]["tasks"] == [second_task]


def create_app_schema_task_enum(client) -> list[str]:  # type: ignore[no-untyped-def]
    """The ``task`` enum of ``ProjectCreate`` in the OpenAPI document the server serves."""
    document = client.get("/schema/openapi.json").json()
    return document["components"]["schemas"]["ProjectCreate"]["properties"]["task"]["enum"]
