"""The plugin module modelyard loads (entry point ``timm`` in the group ``modelyard``).

Registering is cheap: the architectures come from a static table and the
exporter is a description; timm, torch and onnxruntime are imported only when
a model is built or a file exported.
"""

from __future__ import annotations

from modelyard.core import hookimpl

from .architectures import architectures
from .int8 import EXPORTER

#: The hook API this plugin needs: build receiving weights_path, Architecture.validate and the input-size
#: declarations, Exporter.base_format / verification / usage_snippet (modelyard 0.3).
MODELYARD_HOOK_API = "0.3"


@hookimpl
def register_architectures(registry) -> None:  # type: ignore[no-untyped-def]
    for architecture in architectures():
        registry.add(architecture)


@hookimpl
def register_exporters(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(EXPORTER)
