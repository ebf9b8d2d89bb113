"""Hook specifications: the whole contract between modelyard and its plugins.

Every hook receives a registry and adds to it. An implementation may accept
only some of a spec's arguments, so new arguments never break old plugins.
Each hook's docstring ends with the hook API version it was added in
(``Added in X.Y.``), never newer than ``modelyard.core.HOOK_API_VERSION``;
tests/core/test_hook_api.py checks that and that docs/plugins.md lists it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import ArchitectureRegistry, ExporterRegistry, ImporterRegistry, TaskRegistry
    from .registry import CallbackRegistry, LossRegistry, MetricRegistry

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


@hookspec
def register_callbacks(registry: CallbackRegistry) -> None:
    """Add Lightning callbacks and experiment loggers a config selects by name.

    ``registry.add(CallbackPlugin(name, build, options_schema=...))`` for a
    callback (``callbacks: [{name, options}]`` in a config),
    ``registry.add(LoggerPlugin(name, build, options_schema=...))`` for an
    experiment logger (``logging: {name: options}``). ``build(options, context)``
    returns the Lightning object; callbacks and loggers share one namespace.

    :param registry: the callback and logger registry; refuses duplicate names.

    Added in 0.3.
    """


@hookspec
def register_losses(registry: LossRegistry) -> None:
    """Add training losses with ``registry.add(Loss(name, build, tasks=...))``; ``training.loss.name`` names one.

    :param registry: the loss registry; refuses duplicate names.

    Added in 0.3.
    """


@hookspec
def register_metrics(registry: MetricRegistry) -> None:
    """Add validation metrics with ``registry.add(Metric(name, build, tasks=...))``; ``training.metrics`` names them.

    :param registry: the metric registry; refuses duplicate names.

    Added in 0.3.
    """
