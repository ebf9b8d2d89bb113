"""Hostile input to the projects API: clear 4xx envelopes, nothing written outside projects/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import assert_error


def tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size (folders: -1), to compare before/after."""
    snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            snapshot[os.path.relpath(os.path.join(dirpath, name), root)] = -1
        for name in filenames:
            path = os.path.join(dirpath, name)
            snapshot[os.path.relpath(path, root)] = os.lstat(path).st_size
    return snapshot


BAD_NAMES = [
    pytest.param("a/b", id="slash"),
    pytest.param("../../etc/passwd", id="traversal"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("x" * 10_000, id="10kB"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("tab\tname", id="tab"),
    pytest.param("line\nbreak", id="newline"),
    pytest.param("\x1b[2J", id="ansi-escape"),
    pytest.param("next\u0085line", id="c1-control"),
    pytest.param("", id="empty"),
    pytest.param("   ", id="blank"),
]

BAD_IDS = [
    pytest.param("..", id="dotdot"),
    pytest.param("..%2Fx", id="encoded-slash"),
    pytest.param("%2e%2e%2f", id="encoded-dotdot-slash"),
    pytest.param("proj-..%2F..%2Fetc", id="proj-encoded-traversal"),
    pytest.param("proj-AAAAAAAA", id="uppercase"),
    pytest.param("proj-abcdefgh%0A", id="trailing-newline"),
    pytest.param("proj-abcdefg%00", id="nul"),
    pytest.param("proj-abc", id="short"),
    pytest.param("proj-" + "a" * 300, id="very-long"),
    pytest.param("proj-caf%C3%A9abcd", id="unicode"),
    pytest.param("%252e%252e", id="double-encoded"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_create_with_a_hostile_name_is_422_and_writes_nothing(client, tmp_path: Path, name: str) -> None:
    before = tree(tmp_path)
    error = assert_error(client.post("/api/projects", json={"name": name}), 422, "VALIDATION_ERROR")
    assert "name" in (error["details"].get("field"), *error["details"].get("fields", []))
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", BAD_NAMES)
def test_rename_to_a_hostile_name_is_422_and_keeps_the_old_name(client, project_id: str, name: str) -> None:
    assert_error(client.patch(f"/api/projects/{project_id}", json={"name": name}), 422, "VALIDATION_ERROR")
    assert client.get(f"/api/projects/{project_id}").json()["data"]["name"] == "Test project"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": "x", "description": "d" * 10_000}, id="10kB-description"),
        pytest.param({"name": "x", "description": "a\x00b"}, id="nul-description"),
        pytest.param({"name": "x", "task": "../../etc"}, id="traversal-task"),
        pytest.param({"name": "x", "task": "x" * 10_000}, id="10kB-task"),
        pytest.param({"name": ["x"]}, id="list-name"),
        pytest.param({"name": None}, id="null-name"),
        pytest.param({"name": {"$gt": ""}}, id="object-name"),
    ],
)
def test_create_with_other_hostile_fields_is_422(client, tmp_path: Path, body: dict) -> None:
    before = tree(tmp_path)
    assert_error(client.post("/api/projects", json=body), 422, "VALIDATION_ERROR")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", ["Café 猫 🚀", "שלום עולם", "e\u0301te\u0301", "..", ".", "proj-abcdefgh", "'; DROP TABLE--"])
def test_unusual_but_harmless_names_are_kept_verbatim(client, workspace_dir: Path, name: str) -> None:
    response = client.post("/api/projects", json={"name": name})
    assert response.status_code == 201, response.text
    project = response.json()["data"]
    assert project["name"] == name
    assert client.get(f"/api/projects/{project['id']}").json()["data"]["name"] == name
    assert [p["name"] for p in client.get("/api/projects").json()["data"]] == [name]
    # The name is data, never a path: the only folder is the generated id.
    assert [p.name for p in (workspace_dir / "projects").iterdir()] == [project["id"]]
    assert name in (workspace_dir / "projects" / project["id"] / "project.json").read_text(encoding="utf-8")


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_hostile_project_ids_are_4xx_and_touch_nothing(client, tmp_path: Path, project_id: str, bad_id: str) -> None:
    before = tree(tmp_path)
    for method in ("GET", "PATCH", "DELETE"):
        body = {"name": "pwned"} if method == "PATCH" else None
        response = client.request(method, f"/api/projects/{bad_id}", json=body)
        assert 400 <= response.status_code < 500, (method, response.text)
        error = assert_error(response, response.status_code, response.json()["error"]["code"])
        assert error["code"] in {"NOT_FOUND", "VALIDATION_ERROR"}, method
    assert tree(tmp_path) == before
    assert client.get(f"/api/projects/{project_id}").json()["data"]["name"] == "Test project"


@pytest.mark.parametrize("suffix", ["/..", "/../..", "/%2e%2e", "/../../../etc/passwd"])
def test_traversal_after_a_real_id_does_not_reach_the_project(client, tmp_path: Path, project_id: str, suffix: str) -> None:
    before = tree(tmp_path)
    response = client.delete(f"/api/projects/{project_id}{suffix}")
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["status"] == "error"
    assert tree(tmp_path) == before
