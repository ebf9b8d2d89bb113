"""The export worker function: what the job layer runs for a claimed export (``core/jobs/worker.py``).

Steps (``progress`` counts them): rebuild the checkpoint's network and
preprocess up to 64 real images of the run's validation subset (train when it
has none); export with the format's plugin into a private folder and move the
file to ``<architecture>-<run_id><ext>``; run the exported file and the
PyTorch model on those images and compare (``verify``); write the record.
A verification that fails marks the export ``failed`` with the numbers and
``verification_failed: true``; the file stays for inspection.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

from ..errors import ModelyardError
from ..jobs.folder import JobFolder
from ..jobs.kinds import EXPORT
from ..jsonio import read_json
from ..plugin_manager import PluginHost, default_plugin_host
from ..plugin_types import ExportMetadata
from ..records import Export, JobError
from ..datasets.document import split_items
from ..workspace import Workspace
from .service import model_file_name
from .verify import MAX_VERIFY_IMAGES, compare_outputs, predict_in_chunks

log = logging.getLogger(__name__)

STAGING = ".partial"
TOTAL_STEPS = 4


def verification_files(dataset: dict[str, Any], split_index: int, limit: int = MAX_VERIFY_IMAGES) -> list[str]:
    """Up to ``limit`` labelled images of the split's ``val`` subset (``train`` when val is empty)."""
    for subset in ("val", "train"):
        names = [name for name, _ in split_items(dataset, split_index, subset)]
        if names:
            return names[:limit]
    return []


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
    verification = outcome["verification"]
    if verification["passed"]:
        job.finish(status="completed", **outcome)
        return "completed"
    why = verification.get("problem") or (
        f"top-1 agreement {verification['top1_agreement']:.4f}, max abs diff {verification['max_abs_diff']} "
        f"(tolerance {verification['tolerance']:.3g})"
    )
    error = {"type": "VerificationFailed", "message": f"The exported model does not match PyTorch: {why}"}
    job.finish(status="failed", verification_failed=True, error=error, **outcome)
    return "failed"


def _step(job: JobFolder, done: int) -> None:
    job.report_progress(done, TOTAL_STEPS)


def _export(workspace: Workspace, job: JobFolder[Export], record: Export, plugins: PluginHost) -> dict[str, Any]:
    import torch

    from ..training.checkpoints import load_trained_model

    project_id = record.project_id
    exporter = plugins.exporters.get(record.format, field="format")
    options = dict(record.options)
    trained = load_trained_model(
        workspace, project_id, record.run_id, record.checkpoint,
        experiment_id=record.experiment_id, plugins=plugins,
    )
    dataset = read_json(workspace.dataset_json(project_id))
    names = verification_files(dataset, trained.split_index)
    if not names:
        raise ModelyardError("the run's split has no labelled images to verify the export with")
    images_dir = workspace.images_dir(project_id)
    with torch.no_grad():
        batch = trained.preprocess([images_dir / name for name in names]).float().cpu()
        reference = trained.net(batch).float().numpy()
    metadata = trained.metadata()
    _step(job, 1)

    staging = job.folder / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    example = batch[:1].clone()
    export_metadata = ExportMetadata(
        classes=trained.classes, input_size=trained.image_size, mean=trained.mean, std=trained.std,
        architecture=trained.architecture, run_id=trained.ref.run_id, channels=trained.channels,
        extra={"checkpoint": trained.checkpoint},
    )
    produced = exporter.export(trained.net, example, options, staging, export_metadata)
    produced = Path(produced)
    if not produced.is_file() or not produced.resolve().is_relative_to(staging.resolve()):
        raise ModelyardError(f"the {exporter.id} exporter did not write its file into the export folder")
    final = job.folder / model_file_name(trained.architecture, trained.ref.run_id, exporter.extension)
    os.replace(produced, final)
    file_info = {"name": final.name, "size": final.stat().st_size, "sha256": _sha256(final)}
    _step(job, 2)

    predict = exporter.load_runner(final, options)
    shape = options.get("input_shape")
    chunk = int(shape[0]) if isinstance(shape, list) and shape else int(example.shape[0])
    exported = predict_in_chunks(predict, batch.numpy(), chunk)
    verification = compare_outputs(reference, exported, half=options.get("fp16") is True)
    _step(job, 3)
    return {
        "file": file_info,
        "verification": verification,
        "metadata": metadata,
        "progress": {"done": TOTAL_STEPS, "total": TOTAL_STEPS},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
