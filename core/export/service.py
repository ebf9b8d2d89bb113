"""Exports on the server side: create (validate and queue), list, read, delete, download.

``create`` resolves the format in the exporter registry (it must serve the
project's task: a 422 names the formats that do; a format with a
``base_format`` needs that base installed and serving the task too) and its
options against the exporter's schema plus the task's own export options (a
422 names ``options.<name>``), checks the run and checkpoint, writes
``exports/<export-id>/export.json`` as ``pending`` and starts the worker
(``core/export/worker.py``). A download is possible once
the export completed, or when it failed verification (the file is kept for
inspection and the download says so).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConflictError, ExportNotFoundError, ValidationError
from ..export_options import resolve_options
from ..jobs.kinds import EXPORT
from ..jobs.queue import JobQueue
from ..jobs.store import JobStore
from ..plugin_manager import PluginHost
from ..plugin_types import Exporter, extension_problem, tasks_of
from ..projects import read_project
from ..records import Export
from ..registry import ExporterRegistry, base_format_problems
from ..training.checkpoints import existing_checkpoint, find_run, frozen_config
from ..workspace import Workspace
from .bundle import BUNDLE_SUFFIX, build_bundle

if TYPE_CHECKING:
    from ..training.task_runtime import TaskRuntime

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_file_name(architecture: str, run_id: str, extension: str) -> str:
    """``<architecture>-<run_id><extension>``, the architecture reduced to ``[A-Za-z0-9._-]`` (names are not trusted).

    The extension is kept exactly as the exporter declares it (``.int8.onnx``
    stays ``.int8.onnx``): the registry refuses one that ``extension_problem``
    finds wrong, so only an exporter that never registered can bring one, and
    that is reduced to its letters and digits (``.bin`` when none are left).
    """
    arch = _UNSAFE.sub("_", architecture).strip("._") or "model"
    if extension_problem(extension) is None:
        ext = extension
    else:
        ext = "." + (re.sub(r"[^A-Za-z0-9]", "", str(extension))[:16] or "bin")
    return f"{arch[:100]}-{run_id}{ext}"


def static_batch(options: dict[str, Any]) -> int | None:
    """The batch size a file was exported with when its options fix one (``input_shape``), else ``None`` (dynamic)."""
    shape = options.get("input_shape")
    return int(shape[0]) if isinstance(shape, list) and shape else None


def check_input_shape(options: dict[str, Any], channels: int, image_size: tuple[int, int]) -> None:
    """An ``input_shape`` option must match what the run trained on (channels, height, width)."""
    shape = options.get("input_shape")
    if shape is None:
        return
    expected = [channels, int(image_size[0]), int(image_size[1])]
    if list(shape[1:]) != expected:
        raise ValidationError(
            f"options.input_shape {list(shape)} does not match the run's input [batch, {expected[0]}, {expected[1]}, {expected[2]}]",
            field="options.input_shape",
            details={"expected": ["batch", *expected]},
        )


def format_options(exporter: Exporter, options: dict[str, Any]) -> dict[str, Any]:
    """The options of the exporter's own schema (what its ``export`` and ``load_runner`` receive)."""
    known = exporter.options_schema.get("properties", {})
    return {name: value for name, value in options.items() if name in known}


def base_exporter(exporters: ExporterRegistry, exporter: Exporter, task: str) -> Exporter | None:
    """The exporter whose verified file ``exporter`` transforms (its ``base_format``), or ``None`` without one.

    Looked up in the registry the request is served from; a base that is not
    registered, does not serve ``task``, or has a base of its own is a
    ``ValidationError`` on ``format`` (a 422 when an export is requested).
    """
    name = exporter.base_format
    if name is None:
        return None
    if name not in exporters:
        raise ValidationError(
            f"The '{exporter.id}' format is built on the '{name}' format, which is not installed",
            field="format", details={"base_format": name, "available": exporters.names()},
        )
    base = exporters.get(name, field="format")
    problems = base_format_problems(exporter, base)
    if task not in tasks_of(base):
        problems.append(f"its base_format '{base.id}' does not export {task} models")
    if problems:
        raise ValidationError(f"The '{exporter.id}' format cannot export: {'; '.join(dict.fromkeys(problems))}",
                              field="format", details={"base_format": name, "task": task})
    return base


def base_options(base: Exporter, options: dict[str, Any]) -> dict[str, Any]:
    """The base exporter's own options: the request's options its schema names (a derived format that wants one of
    the base's options settable declares it in its own schema under the same name), its defaults for the rest."""
    return resolve_options(base, format_options(base, options))


def check_base_options(base: Exporter, options: dict[str, Any], runtime: TaskRuntime, channels: int,
                       image_size: tuple[int, int]) -> None:
    """The base export's own options (``base_options``) hold for the run and the task, as a direct export's must."""
    from ..export_options import option_defaults

    base_own = base_options(base, options)
    check_input_shape(base_own, channels, image_size)
    runtime.check_export_options(base_own, option_defaults(base.options_schema))


def resolve_export_options(exporter: Exporter, task_schema: dict[str, Any], options: dict[str, Any] | None) -> dict[str, Any]:
    """The request's options checked against the format's schema and the task's export options, defaults filled.

    A task option never replaces a format option of the same name.
    """
    properties = {**task_schema, **exporter.options_schema.get("properties", {})}
    schema = {**exporter.options_schema, "properties": properties}
    return resolve_options(dataclasses.replace(exporter, options_schema=schema), options)


@dataclass(frozen=True)
class Download:
    """A file to send: where it is, the name the client sees, and whether verification failed."""

    path: Path
    filename: str
    verification_failed: bool
    media_type: str = "application/octet-stream"


class ExportService:
    """Export records of every project (see the module docstring)."""

    def __init__(self, workspace: Workspace, plugins: PluginHost, queue: JobQueue) -> None:
        self.workspace = workspace
        self.plugins = plugins
        self.queue = queue
        self.jobs: JobStore[Export] = JobStore(workspace, queue, EXPORT, workspace.exports_dir, lambda export_id: ExportNotFoundError(
            f"Export {export_id} not found", {"export_id": export_id}))

    # -- create ------------------------------------------------------------------
    def create(
        self,
        project_id: str,
        *,
        experiment_id: str,
        run_id: str,
        checkpoint: str = "best",
        format: str = "onnx",  # noqa: A002 - the reference's field name
        options: dict[str, Any] | None = None,
    ) -> Export:
        """Validate the request, write a ``pending`` export and start its worker."""
        from ..export_options import option_defaults
        from ..training.task_runtime import runtime_of

        ref = find_run(self.workspace, project_id, experiment_id, run_id)
        exporter = self.plugins.exporters.get(format, field="format")
        task = read_project(self.workspace, project_id).task
        if task not in tasks_of(exporter):
            serving = [e.id for e in self.plugins.exporters.for_task(task)]
            raise ValidationError(
                f"The '{exporter.id}' format does not export {task} models; use one of: {', '.join(serving) or 'none installed'}",
                field="format", details={"available": serving, "task": task},
            )
        base = base_exporter(self.plugins.exporters, exporter, task)
        runtime = runtime_of(self.plugins.tasks.get(task, field="task"))
        resolved = resolve_export_options(exporter, runtime.export_options_schema(), options)
        existing_checkpoint(ref, checkpoint)
        config = frozen_config(ref)
        check_input_shape(resolved, int(config.data.channels), config.data.image_size)  # type: ignore[arg-type]
        runtime.check_export_options(resolved, option_defaults(exporter.options_schema))
        if base is not None:  # the base export runs first, with its own options: they must hold too
            check_base_options(base, resolved, runtime, int(config.data.channels), config.data.image_size)  # type: ignore[arg-type]
        from ..plugin_checks import check_exporter_options
        from ..training.config import config_to_dict

        # the format's own check of its options (what export receives), a 422 naming options.<name>
        check_exporter_options(exporter, format_options(exporter, resolved), config_to_dict(config), task=task)
        return self.jobs.submit(project_id, {
            "experiment_id": experiment_id,
            "run_id": run_id,
            "checkpoint": checkpoint,
            "format": exporter.id,
            "options": resolved,
            "progress": {"done": 0, "total": 4},
        })

    # -- read ----------------------------------------------------------------------
    def get(self, project_id: str, export_id: str) -> Export:
        return self.jobs.get(project_id, export_id)

    def list(self, project_id: str) -> list[Export]:
        return self.jobs.list(project_id)

    # -- download --------------------------------------------------------------------
    def download(self, project_id: str, export_id: str, bundle: bool = False) -> Download:
        """The model file (or its ZIP bundle) of a finished export; 409 while there is nothing to send."""
        folder = self.jobs.folder(project_id, export_id)
        record = self.get(project_id, export_id)
        name = record.file.name if record.file else None
        downloadable = record.status == "completed" or (record.status == "failed" and record.verification_failed)
        if not downloadable or name is None or record.metadata is None or not (folder / name).is_file():
            raise ConflictError(
                f"Export {export_id} is {record.status}; there is no model file to download",
                {"status": record.status},
            )
        model_path = folder / name
        failed = record.verification_failed
        if not bundle:
            return Download(model_path, name, failed)
        target = folder / (Path(name).stem + BUNDLE_SUFFIX)
        job = self.jobs.job(folder)
        exporter = self.plugins.exporters.get(record.format) if record.format in self.plugins.exporters else None
        with job.locked():
            if not target.is_file():
                build_bundle(model_path, record, target, exporter)
        return Download(target, target.name, failed, media_type="application/zip")

    # -- delete ------------------------------------------------------------------
    def delete(self, project_id: str, export_id: str) -> None:
        """Stop the worker if it still runs, then remove the export folder."""
        self.jobs.delete(project_id, export_id)
