"""Loads plugins once per process and fills the registries.

Built-in plugins (``DEFAULT_PLUGINS``, in that order) load first, then every
entry point of the group ``modelyard``, each exactly once, sorted by entry-point
name (ties by distribution name), so which plugin claims a contested name first
never depends on the file system. ``MODELYARD_DISABLE_PLUGINS``
(comma-separated names) blocks plugins by name. A plugin that fails to import
or raises while registering is logged, listed with its error, and its partial
registrations are rolled back: it never takes the server down.
Set ``MODELYARD_TRACE_PLUGINS=1`` to log every hook call.

A plugin may require a hook API: ``MODELYARD_HOOK_API = "0.3"`` on the object
it registers (the module its entry point names). One that needs a newer API
than ``HOOK_API_VERSION``, or declares it malformed, is listed as failed and
registers nothing. Two distributions with the same entry-point name are both
listed; the later one is failed, naming both.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import ArchitectureRegistry, ExporterRegistry, ImporterRegistry, Registry, TaskRegistry
from .registry import CallbackRegistry, LossRegistry, MetricRegistry

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "modelyard"
DISABLE_ENV = "MODELYARD_DISABLE_PLUGINS"
TRACE_ENV = "MODELYARD_TRACE_PLUGINS"

#: The hook API this modelyard provides, ``MAJOR.MINOR``. Each hook's docstring says the
#: version it was added in; the API only grows (new hooks, new optional arguments), so a
#: plugin written for an older version keeps working. docs/plugins.md lists what each
#: version added.
HOOK_API_VERSION = "0.3"
#: The attribute a plugin sets to the hook API it needs, e.g. ``MODELYARD_HOOK_API = "0.3"``.
HOOK_API_ATTRIBUTE = "MODELYARD_HOOK_API"
_VERSION_PATTERN = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")

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
        #: Entry points whose name another plugin already holds (a clash): listed as failed, never imported.
        self.rejected: list[PluginInfo] = []
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
            version = ep.dist.version if ep.dist is not None else None
            self._load(ep.name, source=_dist_name(ep), version=version, loader=ep.load)
        self._register_all()

    def add_plugin(self, module: ModuleType | object, name: str, source: str = "direct", version: str | None = None) -> None:
        """Register an already-imported plugin object (tests, embedding) and run its hooks."""
        self._load(name, source=source, version=version, loader=lambda: module)
        self._register_plugin(name)

    def _load(self, name: str, source: str, version: str | None, loader: Any) -> None:
        if name in self.plugins:
            known = self.plugins[name]
            if _normalise(known.source) == _normalise(source):
                log.info("plugin %s already loaded; skipping duplicate from %s", name, source)
            else:
                self._reject_clash(name, source, version, known)
            return
        info = PluginInfo(name=name, source=source, version=version)
        self.plugins[name] = info
        if name in self.disabled:
            info.disabled = True
            log.info("plugin %s disabled by %s", name, DISABLE_ENV)
            return
        try:
            plugin = loader()
            check_hook_api(plugin)
            self.pm.register(plugin, name=name)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s failed to load: %s\n%s", name, exc, traceback.format_exc())
            return
        self._warn_unknown_hooks(name, plugin)

    def _reject_clash(self, name: str, source: str, version: str | None, known: PluginInfo) -> None:
        """List a second plugin of an already taken name as failed (disabled if the name is), naming both sources."""
        holder = "modelyard's built-in plugin" if known.source == "builtin" else f"distribution {known.source!r}"
        error = (
            f"PluginError: plugin name {name!r} is provided by {holder} and by distribution {source!r}; "
            f"{known.source!r} came first in the load order, so {source!r} is not loaded "
            f"(uninstall one of them, or ask its author to rename the entry point)"
        )
        info = PluginInfo(name=name, source=source, version=version, error=error, disabled=name in self.disabled)
        self.rejected.append(info)
        log.error("plugin %s from %s not loaded: the name is already taken by %s", name, source, known.source)

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
        self.rejected = [info for info in self.rejected if info.name != name]

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
        """Every plugin in load order, each clash right after the plugin that holds its name."""
        self.ensure_loaded()
        listing = []
        for info in self.plugins.values():
            listing.append(info)
            listing.extend(clash for clash in self.rejected if clash.name == info.name)
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
            for info in listing
        ]


def disabled_from_env() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def parse_hook_api(declared: object) -> tuple[int, int]:
    """``"0.3"`` -> ``(0, 3)``; ``PluginError`` for anything that is not a ``"MAJOR.MINOR"`` string."""
    match = _VERSION_PATTERN.fullmatch(declared) if isinstance(declared, str) else None
    if match is None:
        raise PluginError(
            f"{HOOK_API_ATTRIBUTE} must be a string \"MAJOR.MINOR\" such as \"{HOOK_API_VERSION}\", "
            f"got {declared!r} ({type(declared).__name__})"
        )
    return int(match[1]), int(match[2])


def required_hook_api(plugin: object) -> tuple[int, int] | None:
    """The hook API ``plugin`` declares it needs (its ``MODELYARD_HOOK_API``), ``None`` when it declares none."""
    declared = getattr(plugin, HOOK_API_ATTRIBUTE, None)
    return None if declared is None else parse_hook_api(declared)


def check_hook_api(plugin: object) -> None:
    """Raise ``PluginError`` when ``plugin`` needs a newer hook API than ``HOOK_API_VERSION`` or declares it malformed."""
    needed = required_hook_api(plugin)
    if needed is not None and needed > parse_hook_api(HOOK_API_VERSION):
        raise PluginError(
            f"needs modelyard hook API {getattr(plugin, HOOK_API_ATTRIBUTE)} ({HOOK_API_ATTRIBUTE}), but modelyard "
            f"{_own_version()} provides hook API {HOOK_API_VERSION}: upgrade modelyard or use an older release of the plugin"
        )


def _entry_points() -> list[metadata.EntryPoint]:
    """Entry points of the group sorted by name (ties by distribution name), each distribution's once.

    A distribution visible twice on ``sys.path`` is loaded from the first copy
    ``importlib.metadata`` finds; two distributions with one name are both kept
    (the later one is reported as a clash).
    """
    seen: set[tuple[str, str]] = set()
    unique = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, _normalise(_dist_name(ep)))
        if key not in seen:
            seen.add(key)
            unique.append(ep)
    return sorted(unique, key=lambda ep: (ep.name, _normalise(_dist_name(ep))))


def _dist_name(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "unknown"


def _normalise(dist: str) -> str:
    """A distribution name as PEP 503 compares them (``Modelyard_Acme`` is ``modelyard-acme``)."""
    return re.sub(r"[-_.]+", "-", dist).lower()


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
