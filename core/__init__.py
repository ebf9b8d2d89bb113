"""modelyard's domain core, and the public API for plugin authors.

Writing a plugin
================

A plugin is an ordinary Python module with functions marked ``@hookimpl``;
each hook receives a registry and adds to it::

    from modelyard.core import Architecture, ValidationError, hookimpl

    def build_tiny(num_classes, in_channels=3, pretrained=False, dropout=0.0, **options):
        from torch import nn

        if pretrained:
            raise ValidationError("tiny has no pretrained weights", field="model.pretrained")
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Sequential(nn.Dropout(dropout), nn.Linear(8, num_classes)),
        )

    @hookimpl
    def register_architectures(registry):
        registry.add(Architecture(name="tiny", build=build_tiny, default_input_size=(32, 32), head_name="4"))

Hooks (``modelyard.core.hookspecs``):

- ``register_tasks(registry)`` adds ``Task`` objects (``id``, ``name``,
  ``description``, ``annotation_types``): a project's ``task`` must name one.
  Architectures, importers and exporters say which tasks they serve in their
  ``tasks`` (``("classification",)`` when they do not say).
- ``register_architectures(registry)`` adds ``Architecture`` objects: ``build``
  returns a plain ``nn.Module`` mapping ``(N, C, H, W)`` to ``(N, num_classes)``
  logits, and accepts extra ``**options`` (modelyard passes ``image_size``).
- ``register_importers(registry)`` adds importers: objects with ``id``,
  ``name``, ``description``, ``detect(root) -> bool`` (cheap) and
  ``read(root)`` yielding ``ImageRecord``.
- ``register_exporters(registry)`` adds ``Exporter`` objects: an options JSON
  schema with defaults, ``export(model, example_input, options, out_dir, metadata)``
  and ``load_runner(path, options)`` used to verify every export. Added in
  0.3: ``verification`` (a ``VerificationPolicy``: tolerances, agreement
  minimums, ``lossy``), ``base_format`` (transform another format's verified
  file, received as ``export(..., base_file=path)``), ``usage_snippet`` (the
  bundle README's lines) and the metadata keys every file stores
  (``METADATA_PREFIX``, ``METADATA_KEYS``, ``ExportMetadata.key_values()``).
  ``extension`` is kept exactly as declared and checked when registering.
- ``register_callbacks(registry)`` (0.3) adds ``CallbackPlugin`` (a Lightning
  callback) and ``LoggerPlugin`` (an experiment logger) objects;
  ``register_losses(registry)`` adds ``Loss`` and ``register_metrics(registry)``
  adds ``Metric`` objects. Each has ``build(options, context)`` (a
  ``TrainingContext``) and an options JSON schema; configs select them by name
  (``logging``, ``callbacks``, ``training.loss``, ``training.metrics``).

Helpers for importers: ``read_source_file(path, root, max_bytes)`` and
``source_image_size(path, root)`` read a label file or an image header only
when it is a plain file inside the import folder (no link, no FIFO), raising
``SourceFileError`` with the reason otherwise.

Helpers for exporters: ``resolve_options(exporter, options)`` (the request's
options checked against the exporter's schema, defaults filled in) and
``atomic_write_bytes(path, data)`` (temp file, fsync, rename: a crash never
leaves half a model file). Helpers for architectures with pretrained
weights from the torch hub cache: ``ensure_weights_cached(name, weights)``
(the cached file, downloaded once; a ``ValidationError`` naming the file and
folder when it cannot be fetched) and ``loading_cached_weights(name, file)``
(every ``torch.load`` inside uses ``weights_only=True``; failures become a
``ValidationError``). For ``model.weights_path`` (added in 0.3): a
``build`` that names a ``weights_path`` parameter receives the resolved path
and loads it itself, e.g. with ``load_backbone_weights(model, weights_path,
head="fc")`` (strict on the backbone, a head of another shape skipped and
left freshly initialised; returns a ``LoadReport``); otherwise modelyard loads
the file strictly after ``build``. ``Architecture.min_input_size``,
``input_size_multiple`` and an optional ``validate(config)`` (also on
``Exporter``: ``validate(options)``, and on importers: ``validate(root)``)
refuse impossible requests when they are saved, as a 422 naming the field.
Import everything from ``modelyard.core`` itself:
its other modules are internal and may change.

Names are unique across all plugins (a duplicate fails the later plugin with
both names in the error). Registering must be cheap: build, download and
read in ``build``/``read``/``export``, not in the hook. A plugin that raises is
listed as failed in ``GET /api/system/plugins`` and the server starts without it.

Package it with an entry point in the group ``modelyard``; the entry point's
name is the plugin's name::

    [project.entry-points.modelyard]
    tiny = "my_package.plugin"

``HOOK_API_VERSION`` is the hook API this modelyard provides; each hook's
docstring says the version it was added in. A plugin that needs a newer one
declares it in the module its entry point names, ``MODELYARD_HOOK_API = "0.3"``,
and is listed as failed (registering nothing) by an older modelyard.
``modelyard plugin new NAME`` writes a ready package to start from.

Test it with ``modelyard.testing`` (``check_architecture``, ``check_importer``,
``check_exporter``, ``registered``). ``MODELYARD_DISABLE_PLUGINS=tiny`` disables
it; ``MODELYARD_TRACE_PLUGINS=1`` logs every hook call. docs/plugins.md is the
full guide, with a worked example in tests/fixtures/modelyard_example_plugin.
"""

from .datasets.files import SourceFileError, read_source_file, source_image_size
from .errors import CorruptDataError, ValidationError
from .export_options import resolve_options
from .hookspecs import hookimpl, hookspec
from .hub_weights import ensure_weights_cached, loading_cached_weights, weights_cache_file
from .jsonio import atomic_write_bytes
from .models import LoadReport, load_backbone_weights
from .plugin_manager import HOOK_API_VERSION
from .plugin_types import Architecture, BoxLabel, DatasetImporter, Exporter, ExportMetadata, ImageRecord, Task
from .plugin_types import METADATA_JSON_FIELDS, METADATA_KEYS, METADATA_PREFIX, VerificationPolicy
from .registry import ArchitectureRegistry, ExporterRegistry, ImporterRegistry, TaskRegistry
from .plugin_types import CallbackPlugin, LoggerPlugin, Loss, Metric, TrainingContext
from .registry import CallbackRegistry, LossRegistry, MetricRegistry
from .training.augmentations import ALLOWED as AUGMENTATIONS
from .training.task_runtime import EvaluationOutcome, Sample, TargetStore, TaskRuntime, TensorStore

#: Importing these needs torch, Lightning or numpy, so they load on first use (``modelyard.core`` stays light).
_LAZY = {"TaskModule": ".training.worker.module", "read_result_columns": ".evaluation.results"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "HOOK_API_VERSION",
    "CallbackPlugin",
    "CallbackRegistry",
    "LoggerPlugin",
    "Loss",
    "LossRegistry",
    "Metric",
    "MetricRegistry",
    "TrainingContext",
    "Task",
    "TaskRegistry",
    "TaskRuntime",
    "TaskModule",
    "TargetStore",
    "AUGMENTATIONS",
    "TensorStore",
    "read_result_columns",
    "EvaluationOutcome",
    "Sample",
    "CorruptDataError",
    "Architecture",
    "ArchitectureRegistry",
    "DatasetImporter",
    "ExportMetadata",
    "Exporter",
    "METADATA_JSON_FIELDS",
    "METADATA_KEYS",
    "METADATA_PREFIX",
    "VerificationPolicy",
    "ExporterRegistry",
    "BoxLabel",
    "ImageRecord",
    "ImporterRegistry",
    "ValidationError",
    "SourceFileError",
    "read_source_file",
    "source_image_size",
    "atomic_write_bytes",
    "ensure_weights_cached",
    "hookimpl",
    "hookspec",
    "loading_cached_weights",
    "load_backbone_weights",
    "LoadReport",
    "resolve_options",
    "weights_cache_file",
]
