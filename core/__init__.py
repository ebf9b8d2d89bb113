"""modelyard's domain core, and the public API for plugin authors.

Writing a plugin
================

A plugin is an ordinary Python module with functions marked ``@hookimpl``::

    from modelyard.core import Architecture, hookimpl

    def build_tiny(num_classes, in_channels=3, pretrained=False, dropout=0.0, **options):
        import torch.nn as nn
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    @hookimpl
    def register_architectures(registry):
        registry.add(Architecture(name="tiny", build=build_tiny, default_input_size=(32, 32)))

Hooks (see ``modelyard.core.hookspecs``): ``register_architectures(registry)``,
``register_importers(registry)``, ``register_exporters(registry)``. Each gets a
registry and adds ``Architecture``, importer objects (``id``, ``name``,
``detect(root)``, ``read(root)`` yielding ``ImageRecord``) or ``Exporter``
objects. Names must be unique across all plugins.

Package it with an entry point in the group ``modelyard``::

    [project.entry-points.modelyard]
    tiny = "my_package.plugin"

Test it with ``modelyard.testing`` (contract checks for architectures,
importers and exporters). ``MODELYARD_DISABLE_PLUGINS=tiny`` disables it.
See docs/plugins.md for the full guide.
"""

from .errors import ValidationError
from .hookspecs import hookimpl, hookspec
from .plugin_types import Architecture, DatasetImporter, Exporter, ExportMetadata, ImageRecord
from .registry import ArchitectureRegistry, ExporterRegistry, ImporterRegistry

__all__ = [
    "Architecture",
    "ArchitectureRegistry",
    "DatasetImporter",
    "ExportMetadata",
    "Exporter",
    "ExporterRegistry",
    "ImageRecord",
    "ImporterRegistry",
    "ValidationError",
    "hookimpl",
    "hookspec",
]
