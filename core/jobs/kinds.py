"""The kinds of background work the job layer runs, and what differs between them.

Everything else (the record protocol, the claim, the queue, device
reservation, spawning, liveness, stop and kill) is the same for every kind. A
new kind (prediction batches, dataset indexing, ...) is one more entry here
and one worker function with the signature ``(workspace, folder, plugins) -> status``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..ids import is_valid_id
from ..records import Evaluation, Export, JobRecord, Run
from ..workspace import Workspace
from .folder import JobFolder

if TYPE_CHECKING:
    from ..plugin_manager import PluginHost

WorkerFunction = Callable[[Workspace, Path, "PluginHost"], str]


@dataclass(frozen=True)
class JobKind:
    """One kind of job.

    ``layout`` is the glob of its folders inside a project folder;
    ``lost_status`` is what a job whose worker died becomes; ``liveness`` names
    the ``Settings`` field with the seconds of silence (no progress heartbeat)
    after which a worker is judged stuck; ``runner`` is the fixed, internal
    ``module:function`` of its worker function (never taken from a request);
    ``events`` says whether the job keeps an ``events.jsonl`` the server
    appends to when it ends the job itself; ``exclusive_cpu`` whether two jobs
    of this kind share the CPU (training takes all of it) or take a CPU slot.
    """

    name: str
    prefix: str
    record_name: str
    record_type: type[JobRecord]
    log_name: str
    layout: str
    lost_status: str
    liveness: str
    runner: str
    events: bool = False
    exclusive_cpu: bool = False

    def folders(self, workspace: Workspace, project_id: str | None = None) -> Iterator[Path]:
        """Every job folder of this kind, of one project or the whole workspace (oldest folder name order)."""
        for pid in [project_id] if project_id else workspace.project_ids():
            for record in sorted(workspace.project_dir(pid).glob(f"{self.layout}/{self.record_name}")):
                if is_valid_id(record.parent.name, self.prefix):
                    yield record.parent

    def job(self, workspace: Workspace, folder: Path) -> JobFolder[JobRecord]:
        return JobFolder(workspace, folder, self.record_name, self.log_name, self.record_type)

    def worker_function(self) -> WorkerFunction:
        module, _, function = self.runner.partition(":")
        found: WorkerFunction = getattr(importlib.import_module(module), function)
        return found

    def owns(self, workspace: Workspace, folder: Path) -> bool:
        """Whether ``folder`` (resolved) is one of this kind's job folders in ``workspace``."""
        try:
            parts = folder.relative_to(workspace.projects_dir).parts
        except ValueError:
            return False
        pattern = self.layout.split("/")
        return (len(parts) == len(pattern) + 1 and is_valid_id(parts[0], "proj")
                and all(Path(part).match(glob) for part, glob in zip(parts[1:-1], pattern[:-1], strict=True))
                and is_valid_id(parts[-1], self.prefix) and (folder / self.record_name).is_file())


TRAIN = JobKind(
    name="train", prefix="run", record_name="run.json", record_type=Run, log_name="train.log", layout="experiments/exp-*/runs/run-*",
    lost_status="interrupted", liveness="heartbeat_timeout_s", runner="modelyard.core.training.worker.job:run_training_job",
    events=True, exclusive_cpu=True,
)
EVALUATE = JobKind(
    name="evaluate", prefix="eval", record_name="evaluation.json", record_type=Evaluation, log_name="evaluation.log", layout="evaluations/eval-*",
    lost_status="failed", liveness="short_job_timeout_s", runner="modelyard.core.evaluation.worker:run_evaluation",
)
EXPORT = JobKind(
    name="export", prefix="export", record_name="export.json", record_type=Export, log_name="export.log", layout="exports/export-*",
    lost_status="failed", liveness="short_job_timeout_s", runner="modelyard.core.export.worker:run_export",
)
KINDS: dict[str, JobKind] = {kind.name: kind for kind in (TRAIN, EVALUATE, EXPORT)}


def kind_named(name: str) -> JobKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown job kind {name!r} (known: {', '.join(KINDS)})") from None


def kind_of_folder(workspace: Workspace, folder: Path) -> JobKind | None:
    """The kind whose job folder ``folder`` is (``None`` for anything else)."""
    return next((kind for kind in KINDS.values() if kind.owns(workspace, folder)), None)


def job_devices(record: JobRecord) -> frozenset[str]:
    """The device ids a job needs (``cpu`` when it names none; exports name none)."""
    return frozenset(getattr(record, "devices", None) or ["cpu"])
