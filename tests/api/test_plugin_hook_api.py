"""``GET /api/system/plugins`` explains a plugin that needs a newer hook API and an entry-point name clash."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import TestClient

import modelyard
from modelyard.api.app import create_app
from modelyard.core import HOOK_API_VERSION
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from tests.conftest import BASE_URL

PLUGIN_SOURCE = """\
from modelyard.core import Architecture, hookimpl

MODELYARD_HOOK_API = {hook_api!r}

@hookimpl
def register_architectures(registry):
    registry.add(Architecture(name={arch!r}, build=lambda num_classes, **kw: None))
"""


def _install(site: Path, dist: str, entry_point: str, module: str, hook_api: str, arch: str,
             monkeypatch: pytest.MonkeyPatch) -> None:
    dist_info = site / f"{dist.replace('-', '_')}-2.0.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 2.0.0\n")
    (dist_info / "entry_points.txt").write_text(f"[modelyard]\n{entry_point} = {module}\n")
    (site / f"{module}.py").write_text(PLUGIN_SOURCE.format(hook_api=hook_api, arch=arch))
    monkeypatch.delitem(__import__("sys").modules, module, raising=False)
    monkeypatch.syspath_prepend(str(site))


def _plugins(settings: Settings) -> list[dict]:  # type: ignore[type-arg]
    app = create_app(settings, build_services(settings, plugins=PluginHost().load_all()))
    with TestClient(app, base_url=BASE_URL) as client:
        assert client.get("/api/training/models/simple_cnn").status_code == 200  # the server runs without them
        response = client.get("/api/system/plugins")
        assert response.status_code == 200
        models = {m["name"] for m in client.get("/api/training/models").json()["data"]}
        return [{**row, "_models": models} for row in response.json()["data"]]


def test_a_plugin_needing_a_newer_hook_api_is_listed_failed_with_the_versions(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path / "site", "modelyard-future", "future", "future_plugin", "9.1", "future_net", monkeypatch)
    rows = [row for row in _plugins(settings) if row["name"] == "future"]
    assert len(rows) == 1
    row = rows[0]
    assert (row["status"], row["source"], row["version"]) == ("failed", "modelyard-future", "2.0.0")
    assert row["error"] == (
        f"PluginError: needs modelyard hook API 9.1 (MODELYARD_HOOK_API), but modelyard {modelyard.__version__} "
        f"provides hook API {HOOK_API_VERSION}: upgrade modelyard or use an older release of the plugin"
    )
    assert not any(row["registered"].values()) and "future_net" not in row["_models"]


def test_a_malformed_hook_api_declaration_is_listed_failed(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path / "site", "modelyard-sloppy", "sloppy", "sloppy_plugin", ">=0.1", "sloppy_net", monkeypatch)
    row = next(row for row in _plugins(settings) if row["name"] == "sloppy")
    assert row["status"] == "failed" and "sloppy_net" not in row["_models"]
    assert row["error"] == f"PluginError: MODELYARD_HOOK_API must be a string \"MAJOR.MINOR\" such as \"{HOOK_API_VERSION}\", got '>=0.1' (str)"


def test_two_distributions_of_one_plugin_name_are_both_listed_and_the_second_names_both(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path / "a", "modelyard-acme", "acme", "acme_original", "0.1", "acme_net", monkeypatch)
    _install(tmp_path / "b", "acme-fork", "acme", "acme_fork", "0.1", "fork_net", monkeypatch)
    rows = [row for row in _plugins(settings) if row["name"] == "acme"]
    assert [(row["source"], row["status"]) for row in rows] == [("acme-fork", "loaded"), ("modelyard-acme", "failed")]
    assert rows[1]["error"] == (
        "PluginError: plugin name 'acme' is provided by distribution 'acme-fork' and by distribution 'modelyard-acme'; "
        "'acme-fork' came first in the load order, so 'modelyard-acme' is not loaded "
        "(uninstall one of them, or ask its author to rename the entry point)"
    )
    assert "fork_net" in rows[0]["_models"] and "acme_net" not in rows[0]["_models"]
