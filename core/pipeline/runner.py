"""``run_pipeline``: a pipeline file's steps, each through the same core services the API uses.

Steps: project (reused by name), dataset (imported unless the source is
already exactly the dataset), split (reused when the stored one is exactly
what its ratios and seed give), experiment (reused by name, config
replaced), a new run trained in the foreground, evaluation, exports (each
verified). The first failing step ends the pipeline. Once the run folder
exists, ``pipeline-result.json`` is written into it whatever happened.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from ..datasets.splits import check_ratios
from ..datasets.view import DatasetView
from ..errors import ConflictError, ModelyardError, ValidationError
from ..export.service import base_exporter, check_base_options, check_input_shape, resolve_export_options
from ..plugin_types import tasks_of
from ..training.task_runtime import runtime_of
from ..export_options import option_defaults
from ..jsonio import atomic_write_json, read_json
from ..services import Services
from ..records import EvaluationMetrics
from ..timeutil import utc_now_iso
from ..training.worker.engine import REPRODUCIBILITY_JSON, dataset_fingerprint, split_hash
from ..training.config import monitor_of
from ..training.run_folder import CONFIG_YAML, METRICS_JSON, create_run_folder, read_run
from ..jobs.foreground import evaluate_or_follow, export_or_follow, train_or_follow
from .schema import (
    DatasetSpec,
    ExportSpec,
    Pipeline,
    ProjectSpec,
    SplitSpec,
    check_experiment_config,
    experiment_partial,
)
from .source import is_zip_file, resolve_source, source_matches

RESULT_FILE = "pipeline-result.json"
RESULT_VERSION = 1


class Reporter(Protocol):
    """Where a pipeline tells its progress (the CLI prints it; tests may collect it)."""

    def step(self, title: str) -> None:
        """A step starts."""

    def note(self, message: str) -> None:
        """One line about the current step."""

    def progress(self, label: str) -> Callable[[int, int], None]:
        """A callback ``(done, total)`` for a job's progress."""
        ...


class SilentReporter:
    def step(self, title: str) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def progress(self, label: str) -> Callable[[int, int], None]:
        return lambda done, total: None


@dataclass
class PipelineOutcome:
    """The result document, where it was written (``None`` before a run folder existed) and whether all passed."""

    result: dict[str, Any]
    result_path: Path | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result.get("status") == "completed"


def check_pipeline(services: Services, pipeline: Pipeline) -> None:
    """Refuse, before any step runs, what would fail later: a bad config, ratios, subset or export option."""
    given = pipeline.experiment.config.get("split_index")
    split_index = given if isinstance(given, int) and not isinstance(given, bool) else 0
    config = check_experiment_config(experiment_partial(pipeline, split_index), services.plugins.architectures,
                                     services.plugins.tasks, pipeline.project.task)
    ratios = pipeline.split.ratios
    try:
        check_ratios(ratios.train, ratios.val, ratios.test)
    except ValidationError as exc:
        raise ValidationError(exc.message, field=f"split.{exc.field}") from None
    if pipeline.evaluate is not None:
        for subset in pipeline.evaluate.subsets:
            if getattr(ratios, subset) <= 0:
                raise ValidationError(f"evaluate.subsets names '{subset}', but split.ratios.{subset} is 0",
                                      field="evaluate.subsets")
    runtime = runtime_of(services.plugins.tasks.get(pipeline.project.task, field="project.task")) if pipeline.exports else None
    for position, export in enumerate(pipeline.exports):
        exporter = services.plugins.exporters.get(export.format, field=f"exports[{position}].format")
        try:
            if pipeline.project.task not in tasks_of(exporter):
                serving = [e.id for e in services.plugins.exporters.for_task(pipeline.project.task)]
                raise ValidationError(f"the '{exporter.id}' format does not export {pipeline.project.task} models; "
                                      f"use one of: {', '.join(serving) or 'none installed'}", field="format",
                                      details={"available": serving})
            assert runtime is not None
            base = base_exporter(services.plugins.exporters, exporter, pipeline.project.task)
            options = resolve_export_options(exporter, runtime.export_options_schema(), dict(export.options))
            check_input_shape(options, int(config.data.channels), config.data.image_size)  # type: ignore[arg-type]
            runtime.check_export_options(options, option_defaults(exporter.options_schema))
            if base is not None:  # its base export runs first, with its own options
                check_base_options(base, options, runtime, int(config.data.channels), config.data.image_size)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise ValidationError(exc.message, field=f"exports[{position}].{exc.field or 'options'}",
                                  details={k: v for k, v in exc.details.items() if k != "field"}) from None


def run_pipeline(
    services: Services,
    pipeline: Pipeline,
    base_dir: Path,
    reporter: Reporter | None = None,
    source_file: Path | None = None,
    progress_bar: bool = True,
) -> PipelineOutcome:
    """Run every step of ``pipeline``; see the module docstring."""
    reporter = reporter or SilentReporter()
    started = time.monotonic()
    check_pipeline(services, pipeline)
    result: dict[str, Any] = {
        "version": RESULT_VERSION,
        "status": "running",
        "pipeline": _pipeline_record(pipeline, source_file),
        "started_at": utc_now_iso(),
    }
    reporter.step(f"project '{pipeline.project.name}'")
    result["project"] = ensure_project(services, pipeline.project, reporter)
    project_id = result["project"]["id"]

    reporter.step("dataset")
    result["dataset"] = ensure_dataset(services, pipeline.dataset, project_id, base_dir, reporter)

    reporter.step(f"split '{pipeline.split.name}'")
    result["split"] = ensure_split(services, pipeline.split, project_id, reporter)

    reporter.step(f"experiment '{pipeline.experiment.name}'")
    experiment_id, run_dir = prepare_run(services, pipeline, project_id, result["split"]["index"], reporter)
    result["experiment"] = {"id": experiment_id, "name": pipeline.experiment.name}
    outcome = PipelineOutcome(result, run_dir / RESULT_FILE)
    try:
        reporter.step(f"training run {run_dir.name}")
        result["run"] = _train_step(services, run_dir, progress_bar, reporter)
        if result["run"]["status"] != "completed":
            error = (result["run"].get("error") or {}).get("message") or result["run"]["status"]
            outcome.errors.append(f"training {result['run']['status']}: {error}")
            return _finish(outcome, started, "failed")
        if pipeline.evaluate is not None:
            reporter.step(f"evaluation on {' + '.join(pipeline.evaluate.subsets)}")
            result["evaluation"] = _evaluate_step(services, pipeline, project_id, experiment_id, run_dir, result, reporter)
            if result["evaluation"]["status"] != "completed":
                outcome.errors.append(f"evaluation failed: {(result['evaluation'].get('error') or {}).get('message')}")
                return _finish(outcome, started, "failed")
        result["exports"] = []
        for export in pipeline.exports:
            reporter.step(f"export {export.format}")
            record = _export_step(services, export, project_id, experiment_id, run_dir, reporter)
            result["exports"].append(record)
            if record["status"] != "completed":
                outcome.errors.append(f"export {export.format} failed: {(record.get('error') or {}).get('message')}")
        return _finish(outcome, started, "failed" if outcome.errors else "completed")
    except BaseException as exc:
        message = exc.message if isinstance(exc, ModelyardError) else f"{type(exc).__name__}: {exc}"
        outcome.errors.append(message)
        result["error"] = {"type": type(exc).__name__, "message": message}
        _finish(outcome, started, "failed")
        raise


def _finish(outcome: PipelineOutcome, started: float, status: str) -> PipelineOutcome:
    result = outcome.result
    result["status"] = status
    result["finished_at"] = utc_now_iso()
    result["duration_s"] = round(time.monotonic() - started, 3)
    result["errors"] = list(outcome.errors)
    if outcome.result_path is not None:
        result.setdefault("files", {})["result"] = str(outcome.result_path)
        atomic_write_json(outcome.result_path, result)
    return outcome


def _pipeline_record(pipeline: Pipeline, source_file: Path | None) -> dict[str, Any]:
    record: dict[str, Any] = {"document": msgspec.to_builtins(pipeline)}
    if source_file is not None:
        record["file"] = str(source_file)
        record["sha256"] = hashlib.sha256(source_file.read_bytes()).hexdigest()
    return record


# -- steps ---------------------------------------------------------------------------


def ensure_project(services: Services, spec: ProjectSpec, reporter: Reporter | None = None) -> dict[str, Any]:
    """The project named by ``spec``: reused (same task) or created."""
    reporter = reporter or SilentReporter()
    for project in services.projects.list():
        if project.name == spec.name.strip():
            if project.task != spec.task:
                raise ConflictError(
                    f"project '{spec.name}' exists with task '{project.task}', but the pipeline asks for "
                    f"'{spec.task}'; rename the project in the pipeline file",
                    {"field": "project.task", "project_id": project.id},
                )
            reporter.note(f"reusing project {project.id}")
            return {"id": project.id, "name": project.name, "task": project.task, "created": False}
    project = services.projects.create(spec.name, spec.task, spec.description)
    reporter.note(f"created project {project.id}")
    return {"id": project.id, "name": project.name, "task": project.task, "created": True}


def _dataset(services: Services, project_id: str) -> DatasetView:
    """The project's dataset as the server's shared index serves it (empty before the first import)."""
    return DatasetView(services.datasets.store.index(project_id))


def ensure_dataset(services: Services, spec: DatasetSpec, project_id: str, base_dir: Path,
                   reporter: Reporter | None = None) -> dict[str, Any]:
    """Import the source unless it already is exactly the project's dataset; describe the dataset after."""
    reporter = reporter or SilentReporter()
    source = resolve_source(spec.path, base_dir)
    had_dataset = services.workspace.dataset_json(project_id).is_file()
    current = _dataset(services, project_id) if had_dataset else None
    record: dict[str, Any] = {"source": str(source), "format": spec.format}
    if source_matches(services.workspace, services.settings, services.plugins.importers, source, spec.format, current):
        reporter.note("the source holds exactly the project's images and labels: import skipped")
        record["action"] = "skipped"
    else:
        if is_zip_file(source):
            summary = services.datasets.import_zip(project_id, source, spec.format, spec.replace)
        else:
            summary = services.datasets.import_local(project_id, str(source), spec.format, spec.replace)
        record["action"] = "replaced" if spec.replace and had_dataset else "imported"
        record["format"] = summary.get("format", spec.format)
        record["imported"] = summary.get("imported", 0)
        record["skipped_files"] = len(summary.get("skipped") or [])
        record["duplicates"] = len(summary.get("duplicates") or [])
        reporter.note(f"{record['action']} {record['imported']} image(s) ({record['skipped_files']} skipped, "
                      f"{record['duplicates']} duplicate(s)) with the {record['format']} importer")
    dataset = _dataset(services, project_id)
    record["num_images"] = len(dataset.index)
    record["classes"] = list(dataset.index.classes)
    record["fingerprint"] = dataset_fingerprint(dataset)
    return record


def ensure_split(services: Services, spec: SplitSpec, project_id: str, reporter: Reporter | None = None) -> dict[str, Any]:
    """The split named by ``spec``: reused when it holds exactly what its ratios and seed give, else created."""
    reporter = reporter or SilentReporter()
    ratios = check_ratios(spec.ratios.train, spec.ratios.val, spec.ratios.test)
    dataset = _dataset(services, project_id)
    names = list(dataset.index.split_names)
    name = spec.name.strip()
    if name in names:
        index = names.index(name)
        expected, _ = services.splits.assignment(dataset, ratios, spec.seed, spec.stratified)
        stored = dataset.split_values(index)
        if stored != expected.subsets:
            raise ConflictError(
                f"split '{name}' exists but is not what ratios {spec.ratios.train}/{spec.ratios.val}/{spec.ratios.test} "
                f"and seed {spec.seed} give on the current dataset; give the pipeline's split another name",
                {"field": "split.name", "split_index": index},
            )
        described = services.splits.get(project_id, index)
        reporter.note(f"reusing split #{index} (same ratios and seed)")
        reused, stats, warnings = True, described["stats"], []
    else:
        created = services.splits.create(project_id, name, ratios, spec.seed, spec.stratified)
        index, stats, warnings = created["split_index"], created["stats"], created.get("warnings") or []
        reused = False
        for warning in warnings:
            reporter.note(f"warning: {warning}")
    reporter.note("train {train} / val {val} / test {test}".format(**{k: stats.get(k, 0) for k in ("train", "val", "test")}))
    dataset = _dataset(services, project_id)
    return {"index": index, "name": name, "reused": reused, "stats": stats, "warnings": warnings,
            "assignment_hash": split_hash(dataset, index)}


def prepare_run(services: Services, pipeline: Pipeline, project_id: str, split_index: int,
                reporter: Reporter | None = None) -> tuple[str, Path]:
    """Create or update the experiment and freeze its config into a new pending run; ``(experiment id, run folder)``."""
    reporter = reporter or SilentReporter()
    spec = pipeline.experiment
    partial = experiment_partial(pipeline, split_index)
    experiments = services.experiments
    existing = experiments.find_by_name(project_id, spec.name.strip())
    try:
        if existing is None:
            experiment = experiments.create(project_id, spec.name, spec.description, config=partial)
            reporter.note(f"created experiment {experiment['id']}")
        else:
            changes = {"config": partial, "description": spec.description}
            experiment = experiments.update(project_id, existing["id"], changes, replace_config=True)
            reporter.note(f"reusing experiment {experiment['id']} (config replaced by the pipeline's)")
        config = experiments.run_config(project_id, experiment["id"])
    except ValidationError as exc:
        field = exc.field or ""
        if field.startswith("config"):  # the service names fields from the config's root
            details = {k: v for k, v in exc.details.items() if k != "field"}
            raise ValidationError(exc.message, field="experiment." + field, details=details) from None
        raise
    run_dir = create_run_folder(services.workspace, project_id, experiment["id"], config,
                                monitor_of(config, experiments.task_of(project_id)))
    reporter.note(f"run {run_dir.name}: {run_dir}")
    return experiment["id"], run_dir


def _submitted(reporter: Reporter) -> Callable[[dict[str, Any]], None]:
    """Tells the reporter that the server serving the workspace took the job."""
    return lambda server: reporter.note(
        f"a modelyard server (pid {server.get('pid', '?')}, {server.get('address', '?')}) serves this workspace: "
        "the job is queued there and followed here")


def _train_step(services: Services, run_dir: Path, progress_bar: bool, reporter: Reporter) -> dict[str, Any]:
    status = train_or_follow(services.workspace, run_dir, services.plugins, progress_bar=progress_bar,
                             on_progress=reporter.progress("training"), on_submitted=_submitted(reporter))
    record = read_run(run_dir)
    checkpoints = {kind: str(run_dir / relative)
                   for kind, relative in msgspec.structs.asdict(record.checkpoints).items() if relative}
    reproducibility = run_dir / REPRODUCIBILITY_JSON
    return {
        "id": run_dir.name,
        "status": status,
        "dir": str(run_dir),
        "error": msgspec.to_builtins(record.error),
        "best_epoch": record.best_epoch,
        "stopped_early": msgspec.to_builtins(record.stopped_early),
        "monitor": record.monitor,
        "best_metrics": record.best_metrics,
        "checkpoints": checkpoints,
        "config": str(run_dir / CONFIG_YAML),
        "metrics": str(run_dir / METRICS_JSON),
        "reproducibility": read_json(reproducibility) if reproducibility.is_file() else None,
        "train_s": record.timings.train_s,
    }


def _evaluate_step(services: Services, pipeline: Pipeline, project_id: str, experiment_id: str, run_dir: Path,
                   result: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    spec = pipeline.evaluate
    assert spec is not None
    created = services.evaluations.create(
        project_id, experiment_id=experiment_id, run_id=run_dir.name, checkpoint=spec.checkpoint,
        split_index=result["split"]["index"], split_subset=list(spec.subsets), batch_size=spec.batch_size,
    )
    folder = services.workspace.evaluations_dir(project_id) / created.id
    evaluate_or_follow(services.workspace, folder, services.plugins, reporter.progress("evaluating"),
                       _submitted(reporter))
    record = services.evaluations.get(project_id, created.id)
    metrics = record.metrics
    return {
        "id": created.id,
        "status": record.status,
        "error": msgspec.to_builtins(record.error),
        "checkpoint": spec.checkpoint,
        "subsets": list(spec.subsets),
        "num_images": record.num_images,
        # the task's headline numbers (classification: accuracy, macro, weighted; detection: map, map_50, ...)
        **_headline_metrics(metrics),
        "dir": str(folder),
    }


def _headline_metrics(metrics: EvaluationMetrics | None) -> dict[str, Any]:
    """The numbers a pipeline summary shows: classification's as before, another task's every filled field."""
    if metrics is None or metrics.accuracy is not msgspec.UNSET:
        return {
            "accuracy": metrics.accuracy if metrics else None,
            "macro": msgspec.to_builtins(metrics.macro) if metrics else None,
            "weighted": msgspec.to_builtins(metrics.weighted) if metrics else None,
            "per_class": {name: {"precision": values.precision, "recall": values.recall, "f1": values.f1,
                                 "support": values.support}
                          for name, values in (metrics.per_class if metrics else {}).items()},
            "confusion_matrix": msgspec.to_builtins(metrics.confusion_matrix) if metrics else None,
        }
    return {name: value for name, value in msgspec.to_builtins(metrics).items() if name not in ("curves", "num_images")}


def _export_step(services: Services, export: ExportSpec, project_id: str, experiment_id: str, run_dir: Path,
                 reporter: Reporter) -> dict[str, Any]:
    created = services.exports.create(
        project_id, experiment_id=experiment_id, run_id=run_dir.name, checkpoint=export.checkpoint,
        format=export.format, options=dict(export.options),
    )
    folder = services.workspace.exports_dir(project_id) / created.id
    export_or_follow(services.workspace, folder, services.plugins, reporter.progress(f"exporting {export.format}"),
                     _submitted(reporter))
    record = services.exports.get(project_id, created.id)
    file_info = record.file
    return {
        "id": created.id,
        "format": export.format,
        "status": record.status,
        "error": msgspec.to_builtins(record.error),
        "options": record.options,
        "file": str(folder / file_info.name) if file_info else None,
        "sha256": file_info.sha256 if file_info else None,
        "size": file_info.size if file_info else None,
        "verification": msgspec.to_builtins(record.verification),
        "dir": str(folder),
    }
