"""The export worker function: what the job layer runs for a claimed export (``core/jobs/worker.py``).

Steps (``progress`` counts them): rebuild the checkpoint's network and
preprocess up to 64 real images of the run's validation subset (train when it
has none; read from the dataset's index, ``DatasetView``); export with the format's plugin into a private folder and move the
file to ``<architecture>-<run_id><extension>`` (the extension exactly as the
exporter declares it); run the exported file and the PyTorch model on those
images and compare under the exporter's ``VerificationPolicy``
(``verification.policy`` in the record); write the record.
A verification that fails marks the export ``failed`` with the numbers and
``verification_failed: true``; the file stays for inspection.

A format with a ``base_format`` runs its base exporter first (its own options,
its file verified under its own policy: ``verification.base``), then
transforms that file (``produce.py``); only the derived file is kept. A base
that fails its verification fails the export.

Everything that depends on what the model computes comes from the task's
runtime (``TaskRuntime``'s export section): the module the exporter traces,
the graph's output names and dynamic axes (passed to the exporter in
``ExportMetadata``), the task's facts stored in the file, PyTorch's reference
answer, how the exported file's answer is compared with it, and the bundle
README's usage lines (``usage.json`` beside the model, when the task has its
own). The task's own options (``export_options_schema``) stay in the record
and never reach the exporter plugin.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelyardError, ValidationError
from ..jobs.folder import JobFolder
from ..jobs.kinds import EXPORT
from ..datasets.view import load_dataset_view
from ..jsonio import atomic_write_json
from ..plugin_manager import PluginHost, default_plugin_host
from ..plugin_types import Exporter, ExportMetadata, VerificationPolicy, accepts_keyword, tasks_of
from ..records import Export, JobError
from ..workspace import Workspace
from .bundle import USAGE_FILE
from .produce import export_with_base, with_base
from .service import base_exporter, base_options, format_options, model_file_name, static_batch
from .verify import MAX_VERIFY_IMAGES, effective_policy

if TYPE_CHECKING:
    from ..training.task_runtime import TaskRuntime

log = logging.getLogger(__name__)

STAGING = ".partial"
TOTAL_STEPS = 4


def verification_files(dataset: Mapping[str, Any], split_index: int, runtime: TaskRuntime,
                       image_size: tuple[int, int], limit: int = MAX_VERIFY_IMAGES) -> list[str]:
    """Up to ``limit`` annotated images of the split's ``val`` subset (``train`` when val is empty).

    "Annotated" as the task reads the dataset (its training ``samples`` of the
    ``DatasetView``): a labelled image for classification, any image of the
    subset for detection.
    """
    for subset in ("val", "train"):
        names = [name for name, _ in runtime.samples(dataset, split_index, subset, image_size)]
        if names:
            return names[:limit]
    return []


def task_of(trained: Any) -> str:
    """The task that trained the checkpoint (stored in its hyperparameters; a classifier's before tasks)."""
    return str(trained.module.hparams.get("task") or "classification")


def run_export(workspace: Workspace, export_dir: Path, plugins: PluginHost | None = None) -> str:
    """Run one claimed export job to its end; returns the final status (``completed``/``failed``/``skipped``)."""
    job = EXPORT.job(workspace, export_dir)
    record = job.claimed_record()
    if record is None:
        log.info("export %s is not claimed to run; nothing to do", export_dir.name)
        return "skipped"
    plugins = plugins or default_plugin_host()
    try:
        outcome = _export(workspace, job, record, plugins)
    except Exception as exc:
        log.error("export %s failed:\n%s", export_dir.name, traceback.format_exc())
        job.finish(status="failed", error=JobError.of(exc))
        return "failed"
    finally:
        shutil.rmtree(export_dir / STAGING, ignore_errors=True)
    why = outcome.pop("summary")
    verification = outcome["verification"]
    if verification["passed"]:
        job.finish(status="completed", **outcome)
        return "completed"
    why = verification.get("problem") or why
    error = {"type": "VerificationFailed", "message": f"The exported model does not match PyTorch: {why}"}
    job.finish(status="failed", verification_failed=True, error=error, **outcome)
    return "failed"


def _step(job: JobFolder, done: int) -> None:
    job.report_progress(done, TOTAL_STEPS)


def _export(workspace: Workspace, job: JobFolder[Export], record: Export, plugins: PluginHost) -> dict[str, Any]:
    import torch

    from ..training.checkpoints import load_trained_model
    from ..training.task_runtime import runtime_of

    project_id = record.project_id
    exporter = plugins.exporters.get(record.format, field="format")
    options = dict(record.options)
    trained = load_trained_model(
        workspace, project_id, record.run_id, record.checkpoint,
        experiment_id=record.experiment_id, plugins=plugins,
    )
    task = task_of(trained)
    if task not in tasks_of(exporter):
        raise ValidationError(f"the {exporter.id} format does not export {task} models", field="format")
    runtime = runtime_of(plugins.tasks.get(task, field="task"))
    base = base_exporter(plugins.exporters, exporter, task)
    own = format_options(exporter, options)  # what the exporter plugin sees: its own options only
    runtime.check_export_options(options, _format_defaults(exporter))
    dataset = load_dataset_view(workspace.dataset_json(project_id), task)  # the index, never the parsed document
    names = verification_files(dataset, trained.split_index, runtime, trained.image_size)
    if not names:
        raise ModelyardError("the run's split has no labelled images to verify the export with")
    images_dir = workspace.images_dir(project_id)
    with torch.no_grad():
        batch = trained.preprocess([images_dir / name for name in names]).float().cpu()
        reference = runtime.reference_outputs(trained.net, batch)
    task_facts = runtime.export_metadata(options)
    metadata = {**trained.metadata(), "task": task, "export": task_facts}  # both left out of a classifier's record
    _step(job, 1)

    staging = job.folder / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    example = batch[:1].clone()
    export_metadata = ExportMetadata(
        classes=trained.classes, input_size=trained.image_size, mean=trained.mean, std=trained.std,
        architecture=trained.architecture, run_id=trained.ref.run_id, channels=trained.channels,
        extra={"checkpoint": trained.checkpoint, **task_facts}, task=task,
        outputs=runtime.export_outputs(), input_axes=runtime.export_input_axes(),
    )
    module = runtime.export_module(trained.net, options)

    def verify(fmt: Exporter, path: Path, fmt_options: dict[str, Any]) -> dict[str, Any]:
        """The file against PyTorch's reference, under ``fmt``'s policy (the task's comparison)."""
        predict = fmt.load_runner(path, fmt_options)
        chunk = static_batch(fmt_options if fmt is base else options) or int(example.shape[0])
        exported = runtime.exported_outputs(predict, batch.numpy(), chunk)
        policy, source = effective_policy(fmt, fmt_options)
        return compare_exported(runtime, reference, exported, options, policy, source)

    base_own = base_options(base, options) if base is not None else {}
    produced, base_verification = export_with_base(exporter, base, module, example, own, base_own, staging,
                                                   export_metadata, verify)
    final = job.folder / model_file_name(trained.architecture, trained.ref.run_id, exporter.extension)
    os.replace(produced, final)
    file_info = {"name": final.name, "size": final.stat().st_size, "sha256": _sha256(final)}
    _step(job, 2)

    verification = verify(exporter, final, own)
    summary = runtime.verification_summary(verification)
    base_summary = runtime.verification_summary(base_verification) if base_verification is not None else None
    verification = with_base(verification, base_verification, base_summary)
    usage = runtime.export_usage()
    if usage is not None:
        atomic_write_json(job.folder / USAGE_FILE, {**usage, "verification": summary})
    _step(job, 3)
    return {
        "file": file_info,
        "verification": verification,
        "metadata": metadata,
        "progress": {"done": TOTAL_STEPS, "total": TOTAL_STEPS},
        "summary": summary,
    }


def compare_exported(runtime: TaskRuntime, reference: Any, exported: Any, options: dict[str, Any],
                     policy: VerificationPolicy, source: str) -> dict[str, Any]:
    """The task's comparison under ``policy``, with the policy in the result (``verification.policy``).

    A task runtime whose ``compare_exported`` takes no ``policy`` (written
    before 0.3) compares by its own rules: the record says ``source: task``.
    """
    if accepts_keyword(runtime.compare_exported, "policy"):
        verification = dict(runtime.compare_exported(reference, exported, options, policy=policy))
        verification["policy"] = {"source": source, **policy.as_dict()}
    else:
        verification = dict(runtime.compare_exported(reference, exported, options))
        verification["policy"] = {"source": "task"}
    return verification


def _format_defaults(exporter: Exporter) -> dict[str, Any]:
    from ..export_options import option_defaults

    return option_defaults(exporter.options_schema)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
