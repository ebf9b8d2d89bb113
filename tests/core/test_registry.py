"""Registries: unique names, attribution to plugins, domain errors for unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.core import Architecture, Exporter
from modelyard.core.errors import (
    PluginError,
    UnknownArchitectureError,
    UnknownExportFormatError,
    UnknownImporterError,
    ValidationError,
)
from modelyard.core.registry import ArchitectureRegistry, ExporterRegistry, ImporterRegistry


def _build(num_classes, in_channels=3, pretrained=False, dropout=0.0, **options):  # type: ignore[no-untyped-def]
    from torch import nn

    return nn.Linear(in_channels, num_classes)


def _arch(name: str) -> Architecture:
    return Architecture(name=name, build=_build)


def _exporter(exporter_id: str) -> Exporter:
    return Exporter(id=exporter_id, name=exporter_id, extension=".x", options_schema={}, export=None, load_runner=None)  # type: ignore[arg-type]


class _Importer:
    def __init__(self, importer_id: str) -> None:
        self.id = importer_id
        self.name = importer_id
        self.description = ""

    def detect(self, root: Path) -> bool:
        return (root / f"{self.id}.marker").exists()

    def read(self, root: Path):  # type: ignore[no-untyped-def]
        return iter(())


def test_duplicate_architecture_is_refused_naming_both_plugins() -> None:
    registry = ArchitectureRegistry()
    with registry.registering_as("first_plugin"):
        registry.add(_arch("net"))
    with registry.registering_as("second_plugin"), pytest.raises(PluginError) as caught:
        registry.add(_arch("net"))
    assert str(caught.value) == "Duplicate architecture 'net': registered by plugin 'first_plugin' and again by plugin 'second_plugin'"
    assert caught.value.details == {"name": "net", "plugins": ["first_plugin", "second_plugin"]}
    assert registry.owner("net") == "first_plugin"


def test_duplicate_exporter_and_importer_ids_are_refused() -> None:
    exporters, importers = ExporterRegistry(), ImporterRegistry()
    exporters.add(_exporter("fmt"))
    importers.add(_Importer("layout"))
    with pytest.raises(PluginError, match="Duplicate export format 'fmt'"):
        exporters.add(_exporter("fmt"))
    with pytest.raises(PluginError, match="Duplicate importer 'layout'"):
        importers.add(_Importer("layout"))


def test_unknown_architecture_is_a_validation_error_listing_what_exists() -> None:
    registry = ArchitectureRegistry()
    registry.add(_arch("b_net"))
    registry.add(_arch("a_net"))
    with pytest.raises(UnknownArchitectureError) as caught:
        registry.get("c_net", field="model.architecture")
    error = caught.value
    assert isinstance(error, ValidationError) and error.code == "VALIDATION_ERROR"
    assert error.message == "Unknown architecture 'c_net'. Did you mean 'a_net' or 'b_net'? Available: a_net, b_net"
    assert error.details == {"field": "model.architecture", "name": "c_net", "suggestions": ["a_net", "b_net"],
                             "available": ["a_net", "b_net"]}


@pytest.mark.parametrize(
    ("registry", "error_type", "kind"),
    [
        (ImporterRegistry(), UnknownImporterError, "dataset format"),
        (ExporterRegistry(), UnknownExportFormatError, "export format"),
    ],
)
def test_unknown_importer_and_export_format_raise_their_domain_errors(registry, error_type, kind) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error_type, match=f"Unknown {kind} 'nope'. Available: \\(none\\)"):
        registry.get("nope")


def test_non_string_lookup_is_an_unknown_name_not_a_crash() -> None:
    with pytest.raises(UnknownArchitectureError):
        ArchitectureRegistry().get(["list"])  # type: ignore[arg-type]


def test_registries_refuse_objects_of_the_wrong_kind() -> None:
    with pytest.raises(PluginError, match="must add Architecture objects, got str"):
        ArchitectureRegistry().add("resnet")  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="must add Exporter objects"):
        ExporterRegistry().add(object())  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="lacks 'id'"):
        ImporterRegistry().add(object())  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="non-empty string name"):
        ArchitectureRegistry().add(_arch(""))


def test_remove_plugin_forgets_only_that_plugins_entries() -> None:
    registry = ArchitectureRegistry()
    with registry.registering_as("keep"):
        registry.add(_arch("kept"))
    with registry.registering_as("drop"):
        registry.add(_arch("dropped_1"))
        registry.add(_arch("dropped_2"))
    assert registry.names_by_plugin("drop") == ["dropped_1", "dropped_2"]
    assert sorted(registry.remove_plugin("drop")) == ["dropped_1", "dropped_2"]
    assert registry.names() == ["kept"] and "dropped_1" not in registry and len(registry) == 1


def test_importer_detection_prefers_specific_importers_over_the_imagefolder_catch_all(tmp_path: Path) -> None:
    registry = ImporterRegistry()
    catch_all = _Importer("imagefolder")
    catch_all.detect = lambda root: True  # type: ignore[method-assign]
    specific = _Importer("zz_specific")
    registry.add(catch_all)
    registry.add(specific)
    assert registry.detect(tmp_path) is catch_all
    (tmp_path / "zz_specific.marker").touch()
    assert registry.detect(tmp_path) is specific
