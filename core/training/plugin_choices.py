"""The callbacks, experiment loggers, loss and metrics a config chooses by name (hook API 0.3).

A config only *names* registry entries (``register_callbacks``,
``register_losses``, ``register_metrics``) with options; nothing is imported
from a string. ``check_plugin_choices`` runs when an experiment is saved, so
an unknown name, a bad option or a logger whose package is not installed is a
422 naming the field (``config.logging.mlflow.tracking_uri``) instead of a run
that fails later. The training engine calls ``resolve_plugin_options`` again
when it builds them (defaults filled in) and ``flatten_config`` for the
loggers' parameters.

- ``logging: {<logger>: {options}}``: experiment loggers, besides the run's own
  ``metrics.json`` and ``events.jsonl`` (always written); ``null`` switches one off.
- ``callbacks: [{name, options}]``: Lightning callbacks, in order.
- ``training.loss: {name, options}``: a task takes registered losses when one
  serves it; a task none serves computes its own loss and keeps the default name.
- ``training.metrics: [{name, options}]``: validation metrics logged as ``val/<name>``.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..export_options import check_value, option_defaults
from ..plugin_checks import named_keywords
from ..plugin_types import CallbackPlugin, LoggerPlugin, Loss, Metric, Task, tasks_of

if TYPE_CHECKING:
    from .config import ExperimentConfig

#: ``training.loss.name`` of a config that does not choose one: the task's own loss when no registered loss serves it.
DEFAULT_LOSS = "cross_entropy"

PluginEntry = CallbackPlugin | LoggerPlugin | Loss | Metric

_KIND = {CallbackPlugin: "callback", LoggerPlugin: "logger", Loss: "loss", Metric: "metric"}


def module_available(name: str) -> bool:
    """Whether ``name`` can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve_plugin_options(
    entry: PluginEntry,
    options: Mapping[str, Any] | None,
    field: str,
    *,
    roots: Sequence[Path] | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """``options`` checked against ``entry.options_schema``, defaults filled in, then ``entry.validate``.

    Raises ``ValidationError`` naming ``<field>.<option>`` for an unknown
    option or a wrong value, and naming ``field`` when a module the entry
    ``requires`` is missing (with its ``install_hint``).
    """
    kind = _KIND.get(type(entry), "plugin")
    missing = [module for module in entry.requires if not module_available(module)]
    if missing:
        hint = entry.install_hint or f"install the package that provides {', '.join(missing)}"
        raise ValidationError(
            f"{field}: the {kind} '{entry.name}' needs {', '.join(missing)}, which is not installed: {hint}",
            field=field, details={"missing": missing, "install": entry.install_hint},
        )
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ValidationError(f"{field} must be a mapping of options, got {type(options).__name__}", field=field)
    schema = entry.options_schema or {}
    properties: Mapping[str, Any] = schema.get("properties", {})
    unknown = sorted(set(options) - set(properties))
    if unknown:
        raise ValidationError(
            f"{field}.{unknown[0]}: unknown option of the {kind} '{entry.name}' "
            f"(known: {', '.join(sorted(properties)) or 'none'})",
            field=f"{field}.{unknown[0]}", details={"known": sorted(properties)},
        )
    resolved = option_defaults(schema)
    for name, value in options.items():
        check_value(value, properties[name], f"{field}.{name}")
        resolved[name] = copy.deepcopy(value)
    for name in schema.get("required", []):
        if name not in resolved:
            raise ValidationError(f"{field}.{name}: the {kind} '{entry.name}' needs this option", field=f"{field}.{name}")
    if entry.validate is not None:
        _call_validate(entry, resolved, field, {"roots": list(roots) if roots is not None else None, "task": task})
    return resolved


def _call_validate(entry: PluginEntry, options: dict[str, Any], field: str, extra: dict[str, Any]) -> None:
    """``entry.validate(options, **the keywords it names)``; its error's field is made relative to ``field``."""
    validate = entry.validate
    assert validate is not None
    kwargs = named_keywords(validate, extra)
    try:
        validate(copy.deepcopy(options), **kwargs)
    except ValidationError as exc:
        inner = exc.field
        path = f"{field}.{inner}" if inner and not inner.startswith(field) else (inner or field)
        details = {k: v for k, v in exc.details.items() if k != "field"}
        message = exc.message if exc.message.startswith(field) else f"{path}: {exc.message}"
        raise ValidationError(message, field=path, details=details) from None


def check_plugin_choices(
    config: ExperimentConfig,
    plugins: Any,
    task: Task | None = None,
    roots: Sequence[Path] | None = None,
) -> None:
    """Every logger, callback, loss and metric the config names exists, serves the task and takes its options.

    ``plugins`` is the ``PluginHost`` (its ``callbacks``, ``losses`` and
    ``metrics`` registries); ``roots``, when given, are the folders a path
    option (a ``file:`` tracking URI) may name.
    """
    task_id = task.id if task is not None else None
    for name, options in config.logging.items():
        field = f"config.logging.{name}"
        logger = plugins.callbacks.logger(name, field=field)
        resolve_plugin_options(logger, options, field, roots=roots, task=task_id)
    for index, choice in enumerate(config.callbacks):
        callback = plugins.callbacks.callback(choice.name, field=f"config.callbacks[{index}].name")
        resolve_plugin_options(callback, choice.options, f"config.callbacks[{index}].options", roots=roots, task=task_id)
    _check_loss(config, plugins, task, roots)
    _check_metrics(config, plugins, task, roots)


def _check_loss(config: ExperimentConfig, plugins: Any, task: Task | None, roots: Sequence[Path] | None) -> None:
    choice = config.training.loss
    task_id = task.id if task is not None else None
    serving = [loss.name for loss in plugins.losses.for_task(task_id)]
    if task_id is not None and not serving:
        if choice.name != DEFAULT_LOSS or choice.options:
            field = "config.training.loss.name" if choice.name != DEFAULT_LOSS else "config.training.loss.options"
            raise ValidationError(
                f"{field}: task '{task_id}' computes its own loss (no registered loss serves it); "
                f"leave training.loss.name as {DEFAULT_LOSS} without options",
                field=field,
            )
        return
    loss = plugins.losses.get(choice.name, field="config.training.loss.name")
    if task_id is not None and task_id not in tasks_of(loss):
        raise ValidationError(
            f"config.training.loss.name: the loss '{loss.name}' does not serve task '{task_id}' "
            f"(choose one of: {', '.join(serving)})",
            field="config.training.loss.name", details={"task": task_id, "losses": serving},
        )
    resolve_plugin_options(loss, choice.options, "config.training.loss.options", roots=roots, task=task_id)


def _check_metrics(config: ExperimentConfig, plugins: Any, task: Task | None, roots: Sequence[Path] | None) -> None:
    task_id = task.id if task is not None else None
    seen: set[str] = set()
    for index, choice in enumerate(config.training.metrics):
        field = f"config.training.metrics[{index}]"
        metric = plugins.metrics.get(choice.name, field=f"{field}.name")
        if task_id is not None and task_id not in tasks_of(metric):
            serving = [m.name for m in plugins.metrics.for_task(task_id)]
            raise ValidationError(
                f"{field}.name: the metric '{metric.name}' does not serve task '{task_id}' "
                f"(metrics for it: {', '.join(serving) or 'none installed'})",
                field=f"{field}.name", details={"task": task_id, "metrics": serving},
            )
        logged = f"val/{metric.name}"
        if choice.name in seen or (task is not None and logged in task.metrics):
            raise ValidationError(
                f"{field}.name: {logged} is already logged" + (" by the task" if choice.name not in seen else ""),
                field=f"{field}.name",
            )
        seen.add(choice.name)
        resolve_plugin_options(metric, choice.options, f"{field}.options", roots=roots, task=task_id)


def flatten_config(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"optimizer": {"lr": 0.001}}}`` -> ``{"training.optimizer.lr": 0.001}``: a logger's parameters.

    Lists and empty mappings stay values (loggers show them as text).
    """
    flat: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, path + "."))
        else:
            flat[path] = list(value) if isinstance(value, tuple) else value
    return flat
