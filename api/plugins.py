"""Read-only views of what plugins provide: loaded plugins, export formats, dataset formats, model architectures.

``/api/system/plugins`` (DESIGN section 8), ``/api/export/formats`` (section 7),
``/api/datasets/formats`` and ``/api/training/models``. All read the registries
of ``services.plugins``; nothing here loads or installs a plugin. The format and
model listings take ``?task=``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.params import Parameter, QueryParameter

from modelyard.core.errors import ArchitectureNotFoundError, UnknownArchitectureError
from modelyard.core.models import parameter_count
from modelyard.core.plugin_types import Architecture, Exporter, tasks_of
from modelyard.core.records import AppliedPolicy

from .deps import ServicesDep
from .envelope import Ok, ok
from .openapi import error_responses


class PluginRegistrations(msgspec.Struct):
    tasks: list[str] = msgspec.field(default_factory=list)
    architectures: list[str] = msgspec.field(default_factory=list)
    importers: list[str] = msgspec.field(default_factory=list)
    exporters: list[str] = msgspec.field(default_factory=list)


class Plugin(msgspec.Struct):
    name: str
    version: str | None
    source: str
    """``builtin`` or the name of the distribution that provides the entry point."""
    status: str
    """``loaded``, ``failed`` or ``disabled``."""
    registered: PluginRegistrations
    error: str | None


class ExportFormat(msgspec.Struct):
    id: str
    name: str
    tasks: list[str]
    """The tasks whose models it exports."""
    extension: str
    options: dict[str, Any]
    """JSON schema of the options; every property carries its default."""
    description: str
    plugin: str
    base_format: str | None = None
    """The format whose file this one transforms: exported and verified first (``Exporter.base_format``)."""
    verification: AppliedPolicy | None = None
    """The verification policy of an export with the default options (``Exporter.verification``)."""


class DatasetFormat(msgspec.Struct):
    """An importer: what the ``format`` of an import names (``auto`` asks every one)."""

    id: str
    name: str
    tasks: list[str]
    """The tasks whose annotations it reads."""
    description: str
    plugin: str


class ModelArchitecture(msgspec.Struct):
    name: str
    tasks: list[str]
    plugin: str
    default_input_size: list[int]
    has_pretrained: bool
    num_parameters: int | None
    """Parameters when built for 1000 classes (``null`` if it cannot be counted)."""
    description: str


ArchitectureName = Annotated[str, Parameter(description="Architecture name, e.g. resnet18", max_length=200)]
#: A filter, not a reference: a task id no plugin registered simply matches nothing (an empty list).
TaskFilter = Annotated[str | None, QueryParameter(
    max_length=64, description="Only what serves this task id (e.g. `classification`; `GET /api/system/plugins` "
                               "shows the registered tasks); an id nothing serves gives an empty list")]


def _plugin(info: dict[str, Any]) -> Plugin:
    return Plugin(
        name=info["name"],
        version=info["version"],
        source=info["source"],
        status=info["status"],
        registered=msgspec.convert(info["registered"], PluginRegistrations),
        error=info["error"],
    )


def _architecture(arch: Architecture, plugin: str) -> ModelArchitecture:
    return ModelArchitecture(
        name=arch.name,
        tasks=list(arch.tasks),
        plugin=plugin,
        default_input_size=list(arch.default_input_size),
        has_pretrained=arch.has_pretrained,
        num_parameters=parameter_count(arch),
        description=arch.description,
    )


class PluginController(Controller):
    path = "/api/system/plugins"
    tags = ["System"]

    @get("/", operation_id="ListPlugins", summary="List plugins, what each registered, and load errors")
    async def list_plugins(self, services: ServicesDep) -> Ok[list[Plugin]]:
        return ok([_plugin(info) for info in services.plugins.describe()])


class ExportFormatController(Controller):
    path = "/api/export/formats"
    tags = ["Export"]

    @get("/", operation_id="ListExportFormats", summary="List available export formats",
         responses=error_responses(422))
    async def list_formats(self, services: ServicesDep, task: TaskFilter = None) -> Ok[list[ExportFormat]]:
        registry = services.plugins.exporters
        return ok(
            [
                ExportFormat(
                    id=exporter.id,
                    name=exporter.name,
                    tasks=list(tasks_of(exporter)),
                    extension=exporter.extension,
                    options=exporter.options_schema,
                    description=exporter.description,
                    plugin=registry.owner(exporter.id),
                    base_format=exporter.base_format,
                    verification=_default_policy(exporter),
                )
                for exporter in registry.for_task(task)
            ]
        )


def _default_policy(exporter: Exporter) -> AppliedPolicy | None:
    """The policy an export with the format's default options is verified under (``None`` if it cannot say)."""
    from modelyard.core.export.verify import effective_policy
    from modelyard.core.export_options import option_defaults

    try:
        policy, source = effective_policy(exporter, option_defaults(exporter.options_schema))
    except Exception:  # a plugin's policy function that fails: the listing still lists the format
        return None
    return AppliedPolicy(source=source, **policy.as_dict())


class DatasetFormatController(Controller):
    path = "/api/datasets/formats"
    tags = ["Datasets"]

    @get("/", operation_id="ListDatasetFormats", summary="List dataset import formats",
         description="What the `format` of `import/local` and `import/upload` may name, besides `auto`.",
         responses=error_responses(422))
    async def list_formats(self, services: ServicesDep, task: TaskFilter = None) -> Ok[list[DatasetFormat]]:
        registry = services.plugins.importers
        return ok([
            DatasetFormat(id=importer.id, name=importer.name, tasks=list(tasks_of(importer)),
                          description=getattr(importer, "description", ""), plugin=registry.owner(importer.id))
            for importer in registry.for_task(task)
        ])


class ModelController(Controller):
    path = "/api/training/models"
    tags = ["Training"]

    @get("/", operation_id="ListModels", summary="List model architectures", sync_to_thread=True,
         responses=error_responses(422))
    def list_models(self, services: ServicesDep, task: TaskFilter = None) -> Ok[list[ModelArchitecture]]:
        registry = services.plugins.architectures
        return ok([_architecture(arch, registry.owner(arch.name)) for arch in registry.for_task(task)])

    @get("/{name:str}", operation_id="GetModel", summary="Get one model architecture", sync_to_thread=True,
         responses=error_responses(404, 422))
    def get_model(self, services: ServicesDep, name: ArchitectureName) -> Ok[ModelArchitecture]:
        registry = services.plugins.architectures
        try:
            arch = registry.get(name, field="name")
        except UnknownArchitectureError as exc:  # a resource addressed by name: 404, listing what exists
            raise ArchitectureNotFoundError(exc.message, exc.details) from None
        return ok(_architecture(arch, registry.owner(arch.name)))
