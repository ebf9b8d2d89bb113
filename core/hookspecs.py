"""Hook specifications: the whole contract between modelyard and its plugins.

Every hook receives a registry and adds to it. An implementation may accept
only some of a spec's arguments, so new arguments never break old plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import ArchitectureRegistry, ExporterRegistry, ImporterRegistry, TaskRegistry

PROJECT_NAME = "modelyard"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_tasks(registry: TaskRegistry) -> None:
    """Add tasks with ``registry.add(Task(...))``; a project's ``task`` must name one.

    :param registry: the task registry; refuses duplicate ids.

    Added in 0.2.
    """


@hookspec
def register_architectures(registry: ArchitectureRegistry) -> None:
    """Add model architectures with ``registry.add(Architecture(...))``.

    :param registry: the architecture registry; refuses duplicate names.

    Added in 0.1.
    """


@hookspec
def register_importers(registry: ImporterRegistry) -> None:
    """Add dataset importers (objects with ``id``, ``name``, ``detect(root)``, ``read(root)``).

    :param registry: the importer registry; refuses duplicate ids.

    Added in 0.1.
    """


@hookspec
def register_exporters(registry: ExporterRegistry) -> None:
    """Add export formats with ``registry.add(Exporter(...))``.

    :param registry: the exporter registry; refuses duplicate ids.

    Added in 0.1.
    """
