"""Registries of what plugins provide, keyed by name.

A registry refuses a duplicate name (naming both plugins) and raises the
domain ``Unknown...Error`` (a 4xx) for a missing one. It records which plugin
added each entry so the plugins endpoint can show it and a failing plugin's
partial registrations can be rolled back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from .errors import (
    PluginError,
    UnknownArchitectureError,
    UnknownExportFormatError,
    UnknownImporterError,
    UnknownNameError,
    UnknownTaskError,
)
from .plugin_types import Architecture, DatasetImporter, Exporter, Task, exporter_problems, tasks_of
from .plugin_types import CallbackPlugin, LoggerPlugin, Loss, Metric

T = TypeVar("T")


class Registry(Generic[T]):
    kind: ClassVar[str] = "entry"
    unknown_error: ClassVar[type[UnknownNameError]] = UnknownNameError

    def __init__(self) -> None:
        self._entries: dict[str, T] = {}
        self._owners: dict[str, str] = {}
        self._current_plugin = threading.local()
        #: called before every lookup; the process-wide plugin host loads its plugins there on first use
        self.before_read: Callable[[], object] = _nothing

    # -- registration (called by plugins) ----------------------------------
    def add(self, entry: T) -> T:
        """Register ``entry`` under its name; a second entry of the same name is refused."""
        key = self._key(entry)
        if not isinstance(key, str) or not key:
            raise PluginError(f"{self.kind} must have a non-empty string name, got {key!r}")
        plugin = self.current_plugin
        if key in self._entries:
            raise PluginError(
                f"Duplicate {self.kind} '{key}': registered by plugin '{self._owners[key]}' "
                f"and again by plugin '{plugin}'",
                {"name": key, "plugins": [self._owners[key], plugin]},
            )
        self._entries[key] = entry
        self._owners[key] = plugin
        return entry

    @property
    def current_plugin(self) -> str:
        return getattr(self._current_plugin, "name", "<direct>")

    def registering_as(self, plugin_name: str) -> _Attribution:
        """Context in which ``add`` attributes entries to ``plugin_name`` (used by the plugin manager)."""
        return _Attribution(self, plugin_name)

    def remove_plugin(self, plugin_name: str) -> list[str]:
        """Forget everything ``plugin_name`` registered (a plugin that failed half-way)."""
        names = [name for name, owner in self._owners.items() if owner == plugin_name]
        for name in names:
            del self._entries[name]
            del self._owners[name]
        return names

    # -- lookup (called by core) --------------------------------------------
    def get(self, name: str, field: str | None = None) -> T:
        self.before_read()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown_error(str(name), self.names(), field=field) from None

    def __contains__(self, name: object) -> bool:
        self.before_read()
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        self.before_read()
        return iter(self._entries.values())

    def __len__(self) -> int:
        self.before_read()
        return len(self._entries)

    def names(self) -> list[str]:
        self.before_read()
        return sorted(self._entries)

    def owner(self, name: str) -> str:
        self.before_read()
        return self._owners[name]

    def for_task(self, task: str | None) -> list[T]:
        """The entries that serve ``task`` (all of them for ``None``), in name order."""
        self.before_read()
        return [self._entries[name] for name in sorted(self._entries)
                if task is None or task in tasks_of(self._entries[name])]

    def names_by_plugin(self, plugin_name: str) -> list[str]:
        self.before_read()
        return sorted(name for name, owner in self._owners.items() if owner == plugin_name)

    def _key(self, entry: Any) -> Any:
        return getattr(entry, "name", None)


def _nothing() -> None:
    return None


class _Attribution:
    def __init__(self, registry: Registry[Any], plugin_name: str) -> None:
        self._registry = registry
        self._plugin_name = plugin_name

    def __enter__(self) -> None:
        self._previous = getattr(self._registry._current_plugin, "name", None)
        self._registry._current_plugin.name = self._plugin_name

    def __exit__(self, *exc: object) -> None:
        self._registry._current_plugin.name = self._previous


class TaskRegistry(Registry[Task]):
    kind = "task"
    unknown_error = UnknownTaskError

    def add(self, entry: Task) -> Task:
        if not isinstance(entry, Task):
            raise PluginError(f"register_tasks must add Task objects, got {type(entry).__name__}")
        return super().add(entry)

    def _key(self, entry: Any) -> Any:
        return getattr(entry, "id", None)


class ArchitectureRegistry(Registry[Architecture]):
    kind = "architecture"
    unknown_error = UnknownArchitectureError

    def add(self, entry: Architecture) -> Architecture:
        if not isinstance(entry, Architecture):
            raise PluginError(f"register_architectures must add Architecture objects, got {type(entry).__name__}")
        return super().add(entry)


class ImporterRegistry(Registry[DatasetImporter]):
    kind = "importer"
    unknown_error = UnknownImporterError

    def add(self, entry: DatasetImporter) -> DatasetImporter:
        for attr in ("id", "name", "detect", "read"):
            if not hasattr(entry, attr):
                raise PluginError(f"importer {entry!r} lacks '{attr}'")
        return super().add(entry)

    def _key(self, entry: Any) -> Any:
        return getattr(entry, "id", None)

    def detect(self, root: Any, task: str | None = None) -> DatasetImporter | None:
        """The first importer (in name order, ``imagefolder`` last as the catch-all) that recognises ``root``.

        With ``task``, only the importers that serve it are asked.
        """
        ordered = sorted(self.for_task(task), key=lambda imp: (imp.id == "imagefolder", imp.id))
        for importer in ordered:
            if importer.detect(root):
                return importer
        return None


class ExporterRegistry(Registry[Exporter]):
    kind = "export format"
    unknown_error = UnknownExportFormatError

    def add(self, entry: Exporter) -> Exporter:
        """Register an exporter whose declaration holds up (``exporter_problems``, and its ``base_format``).

        A ``base_format`` registered already must be an exporter without a
        base of its own that serves every task this one does; one registered
        later (or never) is checked when an export is requested.
        """
        if not isinstance(entry, Exporter):
            raise PluginError(f"register_exporters must add Exporter objects, got {type(entry).__name__}")
        problems = exporter_problems(entry)
        base = entry.base_format
        if not problems and base is not None and base in self._entries:
            problems.extend(base_format_problems(entry, self._entries[base]))
        if problems:
            raise PluginError(f"export format '{entry.id}': {'; '.join(problems)}",
                              {"name": entry.id, "problems": problems})
        return super().add(entry)

    def _key(self, entry: Any) -> Any:
        return getattr(entry, "id", None)


def base_format_problems(exporter: Exporter, base: Exporter) -> list[str]:
    """Why ``base`` cannot be ``exporter``'s ``base_format`` (a base with a base of its own, or other tasks)."""
    problems = []
    if base.base_format is not None:
        problems.append(f"its base_format '{base.id}' is itself built on '{base.base_format}' (one level only)")
    missing = [task for task in tasks_of(exporter) if task not in tasks_of(base)]
    if missing:
        problems.append(f"its base_format '{base.id}' does not export {', '.join(missing)} models "
                        f"(it serves {', '.join(tasks_of(base))})")
    return problems


# -- training extensions (added in 0.3) ---------------------------------------------------------------------------


class UnknownCallbackError(UnknownNameError):
    kind = "callback"


class UnknownLoggerError(UnknownNameError):
    kind = "logger"


class UnknownLossError(UnknownNameError):
    kind = "loss"


class UnknownMetricError(UnknownNameError):
    kind = "metric"


class CallbackRegistry(Registry[CallbackPlugin | LoggerPlugin]):
    """Lightning callbacks and experiment loggers (``register_callbacks``): one namespace, looked up by kind."""

    kind = "callback or logger"
    unknown_error = UnknownCallbackError

    def add(self, entry: CallbackPlugin | LoggerPlugin) -> CallbackPlugin | LoggerPlugin:
        if not isinstance(entry, CallbackPlugin | LoggerPlugin):
            raise PluginError(
                f"register_callbacks must add CallbackPlugin or LoggerPlugin objects, got {type(entry).__name__}"
            )
        return super().add(entry)

    def callback(self, name: str, field: str | None = None) -> CallbackPlugin:
        """The callback ``name``; ``UnknownCallbackError`` listing the callbacks otherwise."""
        entry = self._entries.get(name) if name in self else None
        if not isinstance(entry, CallbackPlugin):
            raise UnknownCallbackError(str(name), self.callback_names(), field=field)
        return entry

    def logger(self, name: str, field: str | None = None) -> LoggerPlugin:
        """The logger ``name``; ``UnknownLoggerError`` listing the loggers otherwise."""
        entry = self._entries.get(name) if name in self else None
        if not isinstance(entry, LoggerPlugin):
            raise UnknownLoggerError(str(name), self.logger_names(), field=field)
        return entry

    def callback_names(self) -> list[str]:
        return [entry.name for entry in self if isinstance(entry, CallbackPlugin)]

    def logger_names(self) -> list[str]:
        return [entry.name for entry in self if isinstance(entry, LoggerPlugin)]

    def __iter__(self) -> Iterator[CallbackPlugin | LoggerPlugin]:
        self.before_read()
        return iter([self._entries[name] for name in sorted(self._entries)])


class LossRegistry(Registry[Loss]):
    kind = "loss"
    unknown_error = UnknownLossError

    def add(self, entry: Loss) -> Loss:
        if not isinstance(entry, Loss):
            raise PluginError(f"register_losses must add Loss objects, got {type(entry).__name__}")
        return super().add(entry)


class MetricRegistry(Registry[Metric]):
    kind = "metric"
    unknown_error = UnknownMetricError

    def add(self, entry: Metric) -> Metric:
        if not isinstance(entry, Metric):
            raise PluginError(f"register_metrics must add Metric objects, got {type(entry).__name__}")
        return super().add(entry)
