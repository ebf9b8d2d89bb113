"""A real third-party plugin (tests/fixtures/modelyard_example_plugin) found through its entry point.

The package is "installed" in-process (``example_plugin_installed`` in
tests/conftest.py), then checked the way its author would check it, with
``modelyard.testing``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from modelyard.core.plugin_manager import PluginHost
from modelyard.testing import check_architecture, check_exporter, check_importer


def test_entry_point_plugin_is_loaded_with_its_distribution_and_version(example_plugin_installed) -> None:  # type: ignore[no-untyped-def]
    host = PluginHost(disabled=set()).load_all()
    info = host.plugins["example"]
    assert (info.status, info.source, info.version) == ("loaded", "modelyard-example-plugin", "0.3.0")
    assert info.registered == {"tasks": [], "architectures": ["example_tiny"], "importers": ["example_txt"], "exporters": ["example_ts"]}
    assert host.plugins["simple_cnn"].status == "loaded"


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # the example exporter uses TorchScript as is
def test_example_plugin_passes_the_architecture_importer_and_exporter_contracts(example_plugin_installed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host = PluginHost(disabled=set()).load_all()
    check_architecture(host.architectures.get("example_tiny"), num_classes=(3, 10))
    data = tmp_path / "data"
    data.mkdir()
    for name, shade in (("a.png", 10), ("b.png", 200)):
        Image.new("L", (16, 16), shade).save(data / name)
    (data / "labels.txt").write_text("# file label\na.png dark\nb.png light\n")
    check_importer(host.importers.get("example_txt"), data, {"a.png": "dark", "b.png": "light"})
    assert host.importers.detect(data).id == "example_txt"
    assert check_exporter(host.exporters.get("example_ts"), tmp_path).name == "model.ts"


def test_disabling_the_example_plugin_by_name_removes_everything_it_registers(
    example_plugin_installed, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("MODELYARD_DISABLE_PLUGINS", "example")
    host = PluginHost().load_all()
    assert host.plugins["example"].status == "disabled"
    assert host.plugins["example"].version == "0.3.0"
    assert "example_tiny" not in host.architectures
    assert "example_txt" not in host.importers
    assert "example_ts" not in host.exporters
    assert "modelyard_example_plugin" not in __import__("sys").modules  # a disabled plugin is never imported
