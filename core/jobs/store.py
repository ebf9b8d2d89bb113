"""What every job kind's service shares on the server side: submit a job, find it by id, read, list, delete.

The services of evaluations and exports add what differs (validating and
creating a job, per-image results, downloads) and delegate the rest here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

from ..errors import ModelyardError
from ..records import JobRecord
from ..timeutil import utc_now_iso
from ..workspace import Workspace
from .folder import (
    JobFolder,
    existing_job_folder,
    iter_job_folders,
    list_records,
    new_job_folder,
    remove_job_folder,
)
from .kinds import JobKind
from .queue import JobQueue

R = TypeVar("R", bound=JobRecord)


class JobStore(Generic[R]):
    """The jobs of one kind in every project: ``parent(project_id)`` holds their folders."""

    def __init__(self, workspace: Workspace, queue: JobQueue, kind: JobKind, parent: Callable[[str], Path],
                 not_found: Callable[[str], ModelyardError]) -> None:
        self.workspace = workspace
        self.queue = queue
        self.kind = kind
        self.parent = parent
        self.not_found = not_found

    def submit(self, project_id: str, fields: dict[str, Any]) -> R:
        """Write a new ``pending`` job (the fields every job has, then the kind's ``fields``) and wake the queue."""
        job_id, folder = new_job_folder(self.parent(project_id), self.kind.prefix)
        record = msgspec.convert({**fields, "id": job_id, "project_id": project_id, "status": "pending",
                                  "created_at": utc_now_iso()}, self.kind.record_type)
        job = self.job(folder)
        job.write(record)
        self.queue.wake()
        return self.queue.with_place(folder, job.read())

    def folder(self, project_id: str, job_id: str) -> Path:
        """The job's folder; the kind's not-found error for an unknown project, a malformed id or no record."""
        self.workspace.existing_project_dir(project_id)
        return existing_job_folder(self.parent(project_id), job_id, self.kind.prefix, self.kind.record_name,
                                   self.not_found(job_id))

    def job(self, folder: Path) -> JobFolder[R]:
        return self.kind.job(self.workspace, folder)  # type: ignore[return-value]

    def get(self, project_id: str, job_id: str) -> R:
        """The record, an orphan marked failed, with its place in the queue while it waits."""
        job = self.job(self.folder(project_id, job_id))
        return self.queue.with_place(job.folder, job.fail_if_orphaned(job.read()))

    def list(self, project_id: str) -> list[R]:
        self.workspace.existing_project_dir(project_id)
        return list_records(self.jobs(project_id))

    def delete(self, project_id: str, job_id: str) -> Path:
        """Kill the worker if it still runs, then remove the folder (returned, now gone)."""
        folder = self.folder(project_id, job_id)
        with self.job(folder).locked():
            self.queue.kill(self.kind, folder)
            remove_job_folder(self.workspace, folder)
        return folder

    def jobs(self, project_id: str) -> Iterator[JobFolder[R]]:
        for folder in iter_job_folders(self.parent(project_id), self.kind.prefix, self.kind.record_name):
            yield self.job(folder)
