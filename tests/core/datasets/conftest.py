"""Fixtures for the dataset core tests: a project created through the real service."""

from __future__ import annotations

import pytest

from modelyard.core.services import Services


@pytest.fixture
def project(services: Services) -> str:
    return str(services.projects.create("Datasets").id)
