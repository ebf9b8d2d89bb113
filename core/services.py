"""The set of domain services one process uses, built once from ``Settings``.

The API and the CLI both build a ``Services`` and call the same methods, so a
scripted run and a REST call do exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .datasets import DatasetService, SplitService
from .datasets.store import DatasetStore
from .evaluation.service import EvaluationService
from .export.service import ExportService
from .jobs.queue import JobQueue
from .plugin_manager import PluginHost, default_plugin_host
from .prediction.service import PredictionService
from .projects import ProjectService
from .settings import Settings
from .system import Uptime
from .training.experiments import ExperimentService
from .training.run_service import RunService
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
    queue: JobQueue
    predictions: PredictionService
    uptime: Uptime = field(default_factory=Uptime)


def build_services(
    settings: Settings,
    plugins: PluginHost | None = None,
    *,
    prepare: bool = True,
) -> Services:
    """Prepare the workspace (cleaning crash leftovers) and wire the services over it.

    The CLI passes ``prepare=False``: a short command must not clear the
    staging folder under a server's (or another command's) import in progress.
    The job queue only runs once started (the server's lifespan does); the CLI
    executes its jobs through ``core/jobs/foreground.py`` instead.
    """
    workspace = Workspace(settings.workspace)
    if prepare:
        workspace.prepare()
    queue = JobQueue(workspace, settings)
    plugins = plugins or default_plugin_host()
    dataset_store = DatasetStore(workspace)
    experiments = ExperimentService(workspace, plugins, settings, store=dataset_store)
    datasets = DatasetService(workspace, dataset_store, plugins.importers, settings, tasks=plugins.tasks)
    exports = ExportService(workspace, plugins, queue)
    return Services(
        settings=settings,
        workspace=workspace,
        plugins=plugins,
        projects=ProjectService(workspace, plugins.tasks, store=dataset_store),
        datasets=datasets,
        splits=SplitService(workspace, dataset_store, on_split_removed=experiments.follow_split_removal, tasks=plugins.tasks),
        experiments=experiments,
        runs=RunService(workspace, queue, experiments, store=dataset_store),
        evaluations=EvaluationService(workspace, queue, plugins.tasks, store=dataset_store),
        exports=exports,
        queue=queue,
        predictions=PredictionService(workspace, plugins, settings, datasets, exports),
    )
