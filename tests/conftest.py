"""Shared fixtures: a temp workspace, an app built by ``create_app``, a test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from modelyard.api.app import create_app
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings

BASE_URL = "http://127.0.0.1:8000"


@pytest.fixture
def workspace_dir(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture
def import_root(tmp_path: Path) -> Path:
    root = tmp_path / "imports"
    root.mkdir()
    return root


@pytest.fixture
def settings(workspace_dir: Path, import_root: Path) -> Settings:
    return Settings(workspace=workspace_dir, import_roots=[import_root])


@pytest.fixture
def services(settings: Settings) -> Services:
    return build_services(settings)


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    return create_app(settings, services)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


@pytest.fixture
def project_id(client: TestClient[Litestar]) -> str:
    response = client.post("/api/projects", json={"name": "Test project"})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def assert_error(response: object, status: int, code: str) -> dict:
    """Assert ``response`` is an error envelope with this status and code; return its ``error``."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["status"] == "error", body
    assert set(body["error"]) >= {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text  # type: ignore[attr-defined]
    return body["error"]
