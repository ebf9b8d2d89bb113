"""Loads plugins once per process and fills the registries.

Built-in plugins (``DEFAULT_PLUGINS``) load first, then every entry point of
the group ``modelyard``, each exactly once. ``MODELYARD_DISABLE_PLUGINS``
(comma-separated names) blocks plugins by name. A plugin that fails to import
or raises while registering is logged, listed with its error, and its partial
registrations are rolled back: it never takes the server down.
Set ``MODELYARD_TRACE_PLUGINS=1`` to log every hook call.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .registry import ArchitectureRegistry, ExporterRegistry, ImporterRegistry, Registry, TaskRegistry
from .registry import CallbackRegistry, LossRegistry, MetricRegistry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "modelyard"
DISABLE_ENV = "MODELYARD_DISABLE_PLUGINS"
TRACE_ENV = "MODELYARD_TRACE_PLUGINS"

#: Built-in plugins: ordinary ``@hookimpl`` modules, loaded exactly like third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "modelyard.plugins.classification",
    "modelyard.plugins.object_detection",
    "modelyard.plugins.simple_cnn",
    "modelyard.plugins.simple_detector",
    "modelyard.plugins.torchvision_models",
    "modelyard.plugins.torchvision_detectors",
    "modelyard.plugins.imagefolder",
    "modelyard.plugins.csv_importer",
    "modelyard.plugins.coco_importer",
    "modelyard.plugins.yolo_importer",
    "modelyard.plugins.voc_importer",
    "modelyard.plugins.onnx_exporter",
    "modelyard.plugins.torchscript_exporter",
    "modelyard.plugins.tensorboard_logger",
    "modelyard.plugins.mlflow_logger",
)


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``GET /api/system/plugins`` shows it."""

    name: str
    source: str
    version: str | None
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    disabled: bool = False

    @property
    def loaded(self) -> bool:
        return self.error is None and not self.disabled

    @property
    def status(self) -> str:
        """``loaded``, ``failed`` or ``disabled`` (by ``MODELYARD_DISABLE_PLUGINS``)."""
        if self.disabled:
            return "disabled"
        return "failed" if self.error is not None else "loaded"


class PluginHost:
    """The plugin manager plus the registries it filled."""

    def __init__(self, disabled: set[str] | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = set(disabled if disabled is not None else disabled_from_env())
        for name in self.disabled:
            self.pm.set_blocked(name)
        self.tasks = TaskRegistry()
        self.architectures = ArchitectureRegistry()
        self.importers = ImporterRegistry()
        self.exporters = ExporterRegistry()
        self.callbacks = CallbackRegistry()
        self.losses = LossRegistry()
        self.metrics = MetricRegistry()
        self.plugins: dict[str, PluginInfo] = {}
        self._load_lock = threading.RLock()
        self._loaded = False
        self._deferred = False
        # hooks are called per plugin (to attribute registrations), so tracing is our own log line
        self.tracing = bool(os.environ.get(TRACE_ENV))

    # -- loading ---------------------------------------------------------------
    def load_all(self) -> PluginHost:
        """Load the built-in plugins and every entry point, once (later calls return at once)."""
        with self._load_lock:  # re-entrant: registering reads the registries, which may call back here
            if not self._loaded:
                self._loaded = True
                self._load_everything()
        return self

    def load_on_first_use(self) -> PluginHost:
        """Defer ``load_all`` to the first registry lookup or ``describe()``.

        A CLI command that never touches a plugin (``projects list``) then skips
        importing torchvision, about 3 s of its start.
        """
        for _hook, registry in self._hooks():
            registry.before_read = self.load_all
        self._deferred = True
        return self

    def ensure_loaded(self) -> None:
        """Load now what ``load_on_first_use`` deferred (the server does, so plugin failures show at start)."""
        if self._deferred:
            self.load_all()

    def _load_everything(self) -> None:
        for module_name in DEFAULT_PLUGINS:
            short = module_name.rsplit(".", 1)[-1]
            self._load(short, source="builtin", version=_own_version(), loader=lambda m=module_name: importlib.import_module(m))
        for ep in _entry_points():
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else None
            self._load(ep.name, source=dist, version=version, loader=ep.load)
        self._register_all()

    def add_plugin(self, module: ModuleType | object, name: str, source: str = "direct", version: str | None = None) -> None:
        """Register an already-imported plugin object (tests, embedding) and run its hooks."""
        self._load(name, source=source, version=version, loader=lambda: module)
        self._register_plugin(name)

    def _load(self, name: str, source: str, version: str | None, loader: Any) -> None:
        if name in self.plugins:
            known = self.plugins[name]
            if known.source != source:
                log.warning("plugin name %s from %s is already taken by %s; ignoring it", name, source, known.source)
            else:
                log.info("plugin %s already loaded; skipping duplicate from %s", name, source)
            return
        info = PluginInfo(name=name, source=source, version=version)
        self.plugins[name] = info
        if name in self.disabled:
            info.disabled = True
            log.info("plugin %s disabled by %s", name, DISABLE_ENV)
            return
        try:
            plugin = loader()
            self.pm.register(plugin, name=name)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s failed to load: %s\n%s", name, exc, traceback.format_exc())
            return
        self._warn_unknown_hooks(name, plugin)

    def _warn_unknown_hooks(self, name: str, plugin: object) -> None:
        """A ``@hookimpl`` whose name is no spec is probably a typo; say so instead of ignoring it silently."""
        specs = {hook for hook, caller in vars(self.pm.hook).items() if getattr(caller, "spec", None) is not None}
        for attr in dir(plugin):
            if self.pm.parse_hookimpl_opts(plugin, attr) is not None and attr not in specs:
                log.warning("plugin %s implements unknown hook %s (known: %s)", name, attr, ", ".join(sorted(specs)))

    def _register_all(self) -> None:
        for name, info in self.plugins.items():
            if info.loaded and not info.registered:
                self._register_plugin(name)

    def _register_plugin(self, name: str) -> None:
        info = self.plugins[name]
        if not info.loaded or info.registered:
            return
        try:
            for hook_name, registry in self._hooks():
                caller = getattr(self.pm.hook, hook_name)
                for impl in caller.get_hookimpls():
                    if impl.plugin_name != name:
                        continue
                    kwargs = {arg: registry for arg in impl.argnames if arg == "registry"}
                    if self.tracing:
                        log.info("calling hook %s of plugin %s", hook_name, name)
                    with registry.registering_as(name):
                        impl.function(**kwargs)
        except Exception as exc:
            self._forget(name)
            info.error = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s failed while registering: %s\n%s", name, exc, traceback.format_exc())
            return
        info.registered = {
            "tasks": self.tasks.names_by_plugin(name),
            "architectures": self.architectures.names_by_plugin(name),
            "importers": self.importers.names_by_plugin(name),
            "exporters": self.exporters.names_by_plugin(name),
        }
        # hooks of 0.3 and later: listed only when the plugin registered something there
        for key, registry in (("callbacks", self.callbacks), ("losses", self.losses), ("metrics", self.metrics)):
            if names := registry.names_by_plugin(name):
                info.registered[key] = names

    def remove_plugin(self, name: str) -> None:
        """Unregister a plugin added with ``add_plugin`` and everything it registered (tests, embedding)."""
        self._forget(name)
        self.plugins.pop(name, None)

    def _forget(self, name: str) -> None:
        for _hook, registry in self._hooks():
            registry.remove_plugin(name)
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)

    def _hooks(self) -> list[tuple[str, Registry[Any]]]:
        """Each hook and the registry it fills, in the order plugins are called."""
        return [
            ("register_tasks", self.tasks),
            ("register_architectures", self.architectures),
            ("register_importers", self.importers),
            ("register_exporters", self.exporters),
            ("register_callbacks", self.callbacks),
            ("register_losses", self.losses),
            ("register_metrics", self.metrics),
        ]

    def describe(self) -> list[dict[str, Any]]:
        self.ensure_loaded()
        return [
            {
                "name": info.name,
                "version": info.version,
                "source": info.source,
                "loaded": info.loaded,
                "status": info.status,
                "registered": info.registered,
                "error": info.error,
            }
            for info in self.plugins.values()
        ]


def disabled_from_env() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _entry_points() -> list[metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    return unique


def _own_version() -> str:
    import modelyard

    return modelyard.__version__


_default_host: PluginHost | None = None
_default_lock = threading.Lock()


def default_plugin_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _default_host
    with _default_lock:
        if _default_host is None:
            _default_host = PluginHost().load_on_first_use()
        return _default_host
