"""The evaluation worker function: what the job layer runs for a claimed evaluation (``core/jobs/worker.py``).

It claims the pending record (``running``), rebuilds the checkpoint's network,
feeds the chosen subset(s) through the run's validation preprocessing in
batches (``progress`` {done, total} as it goes), then writes the per-image
results file and the aggregate metrics and marks the evaluation
``completed``; any error marks it ``failed`` with the reason.
"""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any

from ..errors import ModelyardError
from ..jobs.folder import JobFolder
from ..jobs.kinds import EVALUATE
from ..jsonio import read_json
from ..plugin_manager import PluginHost
from ..records import Evaluation, JobError
from ..datasets.document import split_items
from ..workspace import Workspace
from .metrics import compute_metrics
from .results import RESULTS_FILE, ResultsTable
from .service import subsets_of

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5


def select_items(dataset: dict[str, Any], split_index: int, subsets: list[str], model_classes: list[str]) -> tuple[list[tuple[str, str, int]], int]:
    """``(filename, subset, model class id)`` of the subsets' labelled images, and how many were skipped.

    Labels are matched to the model's classes by name (the dataset may have
    gained classes since the run trained); images of a class the model does
    not know are skipped and counted.
    """
    dataset_classes = [str(c) for c in dataset.get("classes") or []]
    model_ids = {name: i for i, name in enumerate(model_classes)}
    items: list[tuple[str, str, int]] = []
    skipped = 0
    for subset in subsets:
        for filename, class_id in split_items(dataset, split_index, subset):
            model_id = model_ids.get(dataset_classes[class_id])
            if model_id is None:
                skipped += 1
            else:
                items.append((filename, subset, model_id))
    return items, skipped


def torch_device(devices: list[str] | None) -> str:
    """``cpu`` or ``cuda:N`` for a device id from ``/api/system/devices``."""
    device = (devices or ["cpu"])[0]
    return "cpu" if device == "cpu" else "cuda:" + device.split(":", 1)[1]


def run_evaluation(workspace: Workspace, eval_dir: Path, plugins: PluginHost | None = None) -> str:
    """Run one claimed evaluation job to its end; returns the final status (``completed``/``failed``/``skipped``)."""
    job = EVALUATE.job(workspace, eval_dir)
    record = job.claimed_record()
    if record is None:
        log.info("evaluation %s is not claimed to run; nothing to do", eval_dir.name)
        return "skipped"
    try:
        outcome = _evaluate(workspace, job, record, plugins)
    except Exception as exc:
        log.error("evaluation %s failed:\n%s", eval_dir.name, traceback.format_exc())
        job.finish(status="failed", error=JobError.of(exc))
        return "failed"
    job.finish(status="completed", **outcome)
    return "completed"


def _evaluate(workspace: Workspace, job: JobFolder[Evaluation], record: Evaluation,
              plugins: PluginHost | None) -> dict[str, Any]:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ..training.checkpoints import load_trained_model

    project_id = record.project_id
    trained = load_trained_model(
        workspace, project_id, record.run_id, record.checkpoint,
        experiment_id=record.experiment_id, plugins=plugins, device=torch_device(record.devices),
    )
    trained.use_fast_cpu_layout()
    dataset = read_json(workspace.dataset_json(project_id))
    subsets = subsets_of(record.split_subset)
    items, skipped = select_items(dataset, record.split_index, subsets, trained.classes)
    if not items:
        raise ModelyardError("none of the subset's images is labelled with a class the model knows")
    images_dir = workspace.images_dir(project_id)
    batch_size = record.batch_size
    probabilities, losses = [], []
    last_report = 0.0
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = trained.preprocess([images_dir / name for name, _, _ in chunk])
            targets = torch.tensor([class_id for _, _, class_id in chunk], device=batch.device)
            logits = trained.net(batch).float()
            probabilities.append(torch.softmax(logits, dim=1).cpu())
            losses.append(F.cross_entropy(logits, targets, reduction="none").cpu())
            done = start + len(chunk)
            if time.monotonic() - last_report >= PROGRESS_INTERVAL_S or done == len(items):
                last_report = time.monotonic()
                job.report_progress(done, len(items))
    probs = torch.cat(probabilities)
    loss = torch.cat(losses)
    targets_all = torch.tensor([class_id for _, _, class_id in items])
    metrics = compute_metrics(probs, targets_all, loss, trained.classes)
    table = ResultsTable.from_probabilities(
        trained.classes,
        [name for name, _, _ in items],
        [subset for _, subset, _ in items],
        targets_all.numpy(),
        probs.numpy(),
        loss.numpy().astype(np.float32),
    )
    table.save(job.folder / RESULTS_FILE)
    return {
        "metrics": metrics,
        "num_images": len(items),
        "skipped": skipped,
        "classes": trained.classes,
        "progress": {"done": len(items), "total": len(items)},
    }
