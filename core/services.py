"""The set of domain services one process uses, built once from ``Settings``.

The API and the CLI both build a ``Services`` and call the same methods, so a
scripted run and a REST call do exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .plugin_manager import PluginHost, default_plugin_host
from .projects import ProjectService
from .settings import Settings
from .system import Uptime
from .workspace import Workspace


@dataclass
class Services:
    settings: Settings
    workspace: Workspace
    plugins: PluginHost
    projects: ProjectService
    uptime: Uptime = field(default_factory=Uptime)


def build_services(settings: Settings, plugins: PluginHost | None = None) -> Services:
    """Prepare the workspace (cleaning crash leftovers) and wire the services over it."""
    workspace = Workspace(settings.workspace)
    workspace.prepare()
    plugins = plugins or default_plugin_host()
    return Services(
        settings=settings,
        workspace=workspace,
        plugins=plugins,
        projects=ProjectService(workspace),
    )
