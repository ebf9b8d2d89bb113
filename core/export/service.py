"""Exports on the server side: create (validate and queue), list, read, delete, download.

``create`` resolves the format in the exporter registry (it must serve the
project's task: a 422 names the formats that do) and its options against the
exporter's schema plus the task's own export options (a 422 names
``options.<name>``), checks the run and checkpoint, writes
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
from typing import Any

from ..errors import ConflictError, ExportNotFoundError, ValidationError
from ..export_options import resolve_options
from ..jobs.kinds import EXPORT
from ..jobs.queue import JobQueue
from ..jobs.store import JobStore
from ..plugin_manager import PluginHost
from ..plugin_types import Exporter, tasks_of
from ..projects import read_project
from ..records import Export
from ..training.checkpoints import existing_checkpoint, find_run, frozen_config
from ..workspace import Workspace
from .bundle import BUNDLE_SUFFIX, build_bundle

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def model_file_name(architecture: str, run_id: str, extension: str) -> str:
    """``<architecture>-<run_id><ext>``, reduced to ``[A-Za-z0-9._-]`` (plugin names are not trusted)."""
    arch = _UNSAFE.sub("_", architecture).strip("._") or "model"
    ext = "." + (re.sub(r"[^A-Za-z0-9]", "", extension)[:16] or "bin")
    return f"{arch[:100]}-{run_id}{ext}"


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
        runtime = runtime_of(self.plugins.tasks.get(task, field="task"))
        resolved = resolve_export_options(exporter, runtime.export_options_schema(), options)
        existing_checkpoint(ref, checkpoint)
        config = frozen_config(ref)
        check_input_shape(resolved, int(config.data.channels), config.data.image_size)  # type: ignore[arg-type]
        runtime.check_export_options(resolved, option_defaults(exporter.options_schema))
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
        with job.locked():
            if not target.is_file():
                build_bundle(model_path, record, target)
        return Download(target, target.name, failed, media_type="application/zip")

    # -- delete ------------------------------------------------------------------
    def delete(self, project_id: str, export_id: str) -> None:
        """Stop the worker if it still runs, then remove the export folder."""
        self.jobs.delete(project_id, export_id)
