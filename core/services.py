"""The set of domain services one process uses, built once from ``Settings``.

The API and the CLI both build a ``Services`` and call the same methods, so a
scripted run and a REST call do exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .datasets import DatasetService, SplitService
from .datasets.store import DatasetStore
from .evaluation.service import EvaluationService
from .export.service import ExportService
from .jobs import JobFolder
from .plugin_manager import PluginHost, default_plugin_host
from .projects import ProjectService
from .settings import Settings
from .system import Uptime
from .training.experiments import ExperimentService
from .training.runs import RunService
from .training.scheduler import RunScheduler
from .workspace import Workspace


@dataclass
class Services:
    settings: Settings
    workspace: Workspace
    plugins: PluginHost
    projects: ProjectService
    datasets: DatasetService
    splits: SplitService
    experiments: ExperimentService
    runs: RunService
    evaluations: EvaluationService
    exports: ExportService
    uptime: Uptime = field(default_factory=Uptime)


def build_services(
    settings: Settings,
    plugins: PluginHost | None = None,
    *,
    prepare: bool = True,
    job_launcher: Callable[[JobFolder, str], int] | None = None,
) -> Services:
    """Prepare the workspace (cleaning crash leftovers) and wire the services over it.

    The CLI passes ``prepare=False``: a short command must not clear the
    staging folder under a server's (or another command's) import in progress.
    ``job_launcher`` replaces the worker launch of evaluations and exports (the
    CLI runs those jobs in the foreground itself).
    """
    workspace = Workspace(settings.workspace)
    if prepare:
        workspace.prepare()
    launch_kw = {} if job_launcher is None else {"launcher": job_launcher}
    plugins = plugins or default_plugin_host()
    dataset_store = DatasetStore(workspace)
    experiments = ExperimentService(workspace, plugins, settings)
    return Services(
        settings=settings,
        workspace=workspace,
        plugins=plugins,
        projects=ProjectService(workspace),
        datasets=DatasetService(workspace, dataset_store, plugins.importers, settings),
        splits=SplitService(workspace, dataset_store, on_split_removed=experiments.follow_split_removal),
        experiments=experiments,
        runs=RunService(workspace, RunScheduler(workspace, settings), experiments),
        evaluations=EvaluationService(workspace, **launch_kw),
        exports=ExportService(workspace, plugins, **launch_kw),
    )
