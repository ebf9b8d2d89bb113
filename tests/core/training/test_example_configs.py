"""Every example config in configs/ loads from YAML and validates against the real plugins.

A file is either an experiment config (DESIGN section 5) or a pipeline file
whose ``experiment.config`` is one; either way that config must resolve.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.core.plugin_manager import default_plugin_host
from modelyard.core.training.config import load_config_file, resolve_config

#: Examples may target GPUs this machine lacks; the device ids they may name.
EXAMPLE_DEVICES = ["cpu", *(f"gpu:{i}" for i in range(8))]
CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("*.yaml"))


def experiment_config(document: dict) -> dict:
    """The experiment config of an example file (the file itself, or a pipeline's ``experiment.config``)."""
    if isinstance(document.get("experiment"), dict):
        return document["experiment"].get("config") or {}
    return document


def test_there_is_at_least_the_quick_cpu_example() -> None:
    assert "cpu-quick.yaml" in [p.name for p in CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_config_loads_and_validates(path: Path) -> None:
    document = experiment_config(load_config_file(path))
    config = resolve_config(document, default_plugin_host().architectures, None, devices=EXAMPLE_DEVICES)
    assert config.model.architecture == document["model"]["architecture"]
