"""Runs on the server side: start, read, stop, resume and delete (DESIGN section 5).

``RunService`` owns the run records; it never trains. Starting a run writes
the run folder (``create_run_folder``) with status ``pending`` and wakes the
job queue (``core/jobs/queue.py``), which starts the worker when the run's
devices are free.
Every transition made here holds the run lock, so it cannot interleave with
the worker's own updates of ``run.json``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import msgspec
import yaml

from ..datasets.store import DatasetStore
from ..errors import CheckpointError, ConflictError, CorruptDataError, ModelyardError, ValidationError
from ..jsonio import atomic_write_bytes, atomic_write_json, read_json
from ..records import Run, RunResumeRecord
from ..timeutil import utc_now_iso
from ..workspace import Workspace
from .checkpoints import RunRef, frozen_config, usable_checkpoint
from ..plugin_types import Task
from .config import ExperimentConfig, monitor_of
from .run_folder import (
    create_run_folder,
    ACTIVE_STATUSES,
    CHECKPOINTS,
    CONFIG_YAML,
    HEARTBEAT,
    METRICS_JSON,
    RUN_JSON,
    STOP_REQUEST,
    TERMINAL_STATUSES,
    EventLog,
    find_run_dir,
    heartbeat_age_s,
    read_run,
    run_job,
    runs_dir,
    trained_split_index,
)
from ..jobs.kinds import TRAIN
from ..jobs.queue import JobQueue, Waiting, end_by_server
from ..timeutil import parse_iso

log = logging.getLogger(__name__)


class ExperimentSource(Protocol):
    """What runs need from the experiments (``ExperimentService``)."""

    def run_config(self, project_id: str, experiment_id: str) -> ExperimentConfig:
        """The experiment's config validated again now (404 when the experiment is missing)."""
        ...

    def task_of(self, project_id: str) -> Task:
        """The project's registered task (what a run's checkpoint follows when early stopping is off)."""
        ...


class RunService:
    def __init__(self, workspace: Workspace, queue: JobQueue, experiments: ExperimentSource,
                 store: DatasetStore | None = None) -> None:
        self.workspace = workspace
        self.queue = queue
        self.experiments = experiments
        #: the server's shared dataset store (one index per dataset version); its own when none is given
        self.store = store if store is not None else DatasetStore(workspace)

    # -- paths -----------------------------------------------------------------
    def run_dir(self, project_id: str, run_id: str) -> Path:
        """The folder of an existing run of an existing project (404s for anything else)."""
        self.workspace.existing_project_dir(project_id)
        return find_run_dir(self.workspace, project_id, run_id)

    # -- start -----------------------------------------------------------------
    def start_run(self, project_id: str, experiment_id: str) -> Run:
        """Freeze the experiment's config into a new pending run and queue it."""
        self.workspace.existing_project_dir(project_id)
        config = self.experiments.run_config(project_id, experiment_id)
        self.queue.check_hardware_executor(config.hardware.executor)
        run_dir = create_run_folder(self.workspace, project_id, experiment_id, config,
                                    monitor_of(config, self.experiments.task_of(project_id)))
        self.queue.wake()
        return self._with_derived(run_dir, read_run(run_dir))

    # -- read ------------------------------------------------------------------
    def get_run(self, project_id: str, run_id: str) -> Run:
        """The run record plus what is derived at read time (elapsed time, heartbeat age, queue place)."""
        run_dir = self.run_dir(project_id, run_id)
        return self._with_derived(run_dir, read_run(run_dir))

    def list_runs(self, project_id: str, experiment_id: str) -> list[Run]:
        """Runs of one experiment, newest first."""
        self.workspace.existing_project_dir(project_id)
        folder = runs_dir(self.workspace, project_id, experiment_id)
        read: list[tuple[Path, Run]] = []
        for run_json in folder.glob("run-*/" + RUN_JSON):
            with contextlib.suppress(FileNotFoundError, ModelyardError):
                read.append((run_json.parent, read_run(run_json.parent)))
        # the queue is planned once for the whole list, and only when one of its runs waits in it
        places = self.queue.waiting_places() if any(run.status == "pending" for _, run in read) else {}
        records = [self._with_derived(run_dir, run, places=places) for run_dir, run in read]
        return sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)

    def get_metrics(self, project_id: str, run_id: str) -> list[dict[str, Any]]:
        """``metrics.json``: one record per finished epoch (empty before the first one)."""
        path = self.run_dir(project_id, run_id) / METRICS_JSON
        try:
            metrics = read_json(path)
        except FileNotFoundError:
            return []
        return [m for m in metrics if isinstance(m, dict)] if isinstance(metrics, list) else []

    def events_after(self, project_id: str, run_id: str, after_id: int) -> tuple[list[dict[str, Any]], str, str | None]:
        """Events with ``id > after_id``, the run's status, and the name of the last event in the log."""
        run_dir = self.run_dir(project_id, run_id)
        status = read_run(run_dir).status
        events = EventLog(self.workspace, run_dir).read(after_id=0)
        last_name = events[-1]["event"] if events else None
        return [e for e in events if e["id"] > after_id], status, last_name

    # -- stop ------------------------------------------------------------------
    def stop_run(self, project_id: str, run_id: str) -> Run:
        """Ask the worker to save ``last.ckpt`` and exit ``stopped``; a queued run is simply stopped.

        The queue kills the worker's process group if it has not exited
        ``stop_timeout_s`` after the request (recorded as ``killed: true``).
        """
        run_dir = self.run_dir(project_id, run_id)
        job = run_job(self.workspace, run_dir)
        with job.locked():
            record = job.read()
            status = record.status
            if status == "pending":
                end_by_server(self.workspace, TRAIN, run_dir, "stopped", "stopped before it started",
                              frozenset({"pending"}))
            elif status == "running":
                if not record.stop_requested:
                    atomic_write_json(run_dir / STOP_REQUEST, {"requested_at": utc_now_iso()})
                    record.stop_requested = True
                    job.write_locked(record)
            else:
                raise ConflictError(
                    f"Run {run_id} is not running (status {status}); only a pending or running run can be stopped",
                    {"run_id": run_id, "status": status},
                )
        self.queue.wake()
        return self.get_run(project_id, run_id)

    # -- resume ----------------------------------------------------------------
    def resume_run(self, project_id: str, run_id: str, max_epochs: int | None = None) -> Run:
        """Queue a stopped, failed or interrupted run again, to continue from its last checkpoint.

        The checkpoint is loaded (``weights_only=True``) before anything
        changes: a torn ``last.ckpt`` falls back to a loadable ``best.ckpt``,
        and when neither loads the request is refused with the reason. A run
        that never finished an epoch (no checkpoint, no metrics) starts over.
        """
        run_dir = self.run_dir(project_id, run_id)
        self._check_resumable(run_id, read_run(run_dir))
        self.queue.check_hardware_executor(frozen_config(RunRef(project_id, "", run_id, run_dir)).hardware.executor)
        try:
            checkpoint = usable_checkpoint(run_dir / CHECKPOINTS)
        except CheckpointError as exc:
            raise ConflictError(f"Run {run_id} cannot be resumed: {exc}", {"run_id": run_id, **exc.details}) from None
        if checkpoint is None and self._epochs_done(run_dir):
            raise ConflictError(
                f"Run {run_id} cannot be resumed: it has finished epochs but no checkpoint to continue from",
                {"run_id": run_id},
            )
        from_epoch = checkpoint.epochs_done if checkpoint else 0
        self._check_split_unmoved(project_id, run_id, run_dir)
        job = run_job(self.workspace, run_dir)
        with job.locked():
            record = job.read()
            self._check_resumable(run_id, record)  # again, under the lock
            total = record.progress.total_epochs
            if max_epochs is not None:
                if max_epochs <= from_epoch:
                    raise ValidationError(
                        f"max_epochs must be greater than the {from_epoch} epoch(s) already trained",
                        field="max_epochs", details={"epochs_done": from_epoch},
                    )
                if max_epochs != total:
                    self._set_max_epochs(run_dir, max_epochs)
                total = max_epochs
            elif checkpoint and from_epoch >= total:
                raise ConflictError(
                    f"Run {run_id} has already trained all {total} epoch(s); "
                    "resume with a higher max_epochs to extend it",
                    {"run_id": run_id, "epochs_done": from_epoch, "max_epochs": total},
                )
            if checkpoint and checkpoint.fallback_from:
                checkpoint.promote_to_last()
            record = msgspec.structs.replace(
                record, status="pending", finished_at=None, error=None, stop_requested=False, killed=False,
                worker_pid=None, worker_pgid=None, worker_started=None, claimed_by=None,
                progress=msgspec.structs.replace(record.progress, total_epochs=total),
                resumes=[*record.resumes, RunResumeRecord(
                    at=utc_now_iso(), from_epoch=from_epoch, max_epochs=total,
                    checkpoint=f"{CHECKPOINTS}/last.ckpt" if checkpoint else None,
                    fallback_from=checkpoint.fallback_from if checkpoint else None,
                )],
            )
            job.write_locked(record)
            for leftover in (STOP_REQUEST, HEARTBEAT):  # of the last attempt; a fresh heartbeat would block the start
                with contextlib.suppress(FileNotFoundError):
                    (run_dir / leftover).unlink()
            EventLog(self.workspace, run_dir).append(
                "status", {"status": "pending", "reason": f"resumed from epoch {from_epoch}"}
            )
        self.queue.wake()
        return self.get_run(project_id, run_id)

    @staticmethod
    def _check_resumable(run_id: str, record: Run) -> None:
        status = record.status
        if status == "completed":
            raise ConflictError(
                f"Run {run_id} is completed and cannot be resumed; start a new run (or raise max_epochs in a new run)",
                {"run_id": run_id, "status": status},
            )
        if status in ACTIVE_STATUSES:
            raise ConflictError(f"Run {run_id} is already {status}", {"run_id": run_id, "status": status})

    def _epochs_done(self, run_dir: Path) -> int:
        try:
            metrics = read_json(run_dir / METRICS_JSON)
        except (FileNotFoundError, ModelyardError):
            return 0
        return len(metrics) if isinstance(metrics, list) else 0

    def _check_split_unmoved(self, project_id: str, run_id: str, run_dir: Path) -> None:
        """A resume trains on the frozen ``split_index``: refuse it when deleting an earlier split moved the run's split."""
        names = [str(n) for n in self.store.index(project_id).split_names]  # the shared index: no parse of dataset.json
        frozen = frozen_config(RunRef(project_id, run_dir.parent.parent.name, run_id, run_dir)).split_index
        try:
            now = trained_split_index(run_dir, frozen, names)
        except ConflictError as exc:
            raise ConflictError(f"Run {run_id} cannot be resumed: {exc.message}", {"run_id": run_id, **exc.details}) from None
        if now != frozen:
            raise ConflictError(
                f"Run {run_id} cannot be resumed: its split '{names[now]}' moved from index {frozen} to {now} "
                "when an earlier split was deleted; start a new run",
                {"run_id": run_id, "split_name": names[now], "split_index": now, "frozen_split_index": frozen},
            )

    @staticmethod
    def _set_max_epochs(run_dir: Path, max_epochs: int) -> None:
        """Raise ``training.max_epochs`` in the frozen config (the one allowed change, recorded in ``resumes``)."""
        config = yaml.safe_load((run_dir / CONFIG_YAML).read_text(encoding="utf-8")) or {}
        config.setdefault("training", {})["max_epochs"] = max_epochs
        atomic_write_bytes(run_dir / CONFIG_YAML, yaml.safe_dump(config, sort_keys=False).encode("utf-8"))

    # -- delete ----------------------------------------------------------------
    def delete_run(self, project_id: str, run_id: str) -> None:
        """Remove the run folder; refused while its worker runs (stop it first)."""
        run_dir = self.run_dir(project_id, run_id)
        job = run_job(self.workspace, run_dir)
        with job.locked():
            try:
                status: str | None = job.read().status
            except CorruptDataError:  # an unreadable run.json must not trap the run: delete unless a worker beats
                age = heartbeat_age_s(run_dir)
                status = "running" if age is not None and age < self.queue.settings.heartbeat_timeout_s else None
            if status == "running":
                raise ConflictError(
                    f"Run {run_id} is running; stop it before deleting it", {"run_id": run_id, "status": status}
                )
            # Rename first, so a crash mid-delete never leaves a half run that still lists.
            trash = self.workspace.new_staging_dir(f"delete-{run_id}")
            run_dir.rename(trash / run_id)
        shutil.rmtree(trash, ignore_errors=True)
        self.queue.wake()

    # -- derived fields ----------------------------------------------------------
    def _with_derived(self, run_dir: Path, record: Run, places: dict[Path, Waiting] | None = None) -> Run:
        status = record.status
        started = parse_iso(record.started_at)
        finished = parse_iso(record.finished_at)
        end = finished if status in TERMINAL_STATUSES and finished is not None else time.time()
        age = heartbeat_age_s(run_dir) if status == "running" else None
        placed = self.queue.with_place(run_dir, record, places)
        return msgspec.structs.replace(
            placed,
            elapsed_s=round(max(0.0, end - started), 3) if started is not None else None,
            heartbeat_age_s=round(age, 3) if age is not None else None,
        )
