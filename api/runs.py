"""Runs: reference section 4 (start, status, stop, resume, delete, metrics, SSE stream)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Annotated

import anyio.to_thread
import msgspec
from litestar import Controller, Litestar, delete, get, post
from litestar.params import HeaderParameter, JSONBody, Parameter, QueryParameter
from litestar.response import ServerSentEvent

from modelyard.core.records import Metrics, Run

from .deps import ServicesDep
from .envelope import Deleted, Ok, WaitSeconds, after_wait, ok
from .openapi import error_responses
from .run_stream import follow_events


class RunStarted(msgspec.Struct):
    run_id: str
    status: str
    experiment_id: str
    created_at: str
    queue_position: int | None = None
    waiting_reason: str | None = None


class RunResume(msgspec.Struct, forbid_unknown_fields=True):
    """Optional body of ``resume``: a higher ``max_epochs`` extends the run."""

    max_epochs: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None


ProjectId = Annotated[str, Parameter(description="Project id, e.g. proj-a1b2c3d4", max_length=64)]
ExperimentId = Annotated[str, Parameter(description="Experiment id, e.g. exp-a1b2c3d4", max_length=64)]
RunId = Annotated[str, Parameter(description="Run id, e.g. run-e5f6g7h8", max_length=64)]


class RunController(Controller):
    path = "/api/training/{project_id:str}"
    tags = ["Runs"]

    @post("/experiments/{exp_id:str}/run", operation_id="StartRun", summary="Start a new run",
          description="Freezes the experiment's config into a new run and queues it (status `pending`); "
                      "the run starts as soon as its devices are free.",
          sync_to_thread=True, status_code=201, responses=error_responses(404, 409, 422))
    def start_run(self, services: ServicesDep, project_id: ProjectId, exp_id: ExperimentId) -> Ok[RunStarted]:
        run = services.runs.start_run(project_id, exp_id)
        return ok(RunStarted(run_id=run.id, status=run.status, experiment_id=run.experiment_id,
                             created_at=run.created_at, queue_position=run.queue_position,
                             waiting_reason=run.waiting_reason))

    @get("/experiments/{exp_id:str}/runs", operation_id="ListRuns", summary="List the runs of an experiment",
         sync_to_thread=True, responses=error_responses(404, 409, 422))
    def list_runs(self, services: ServicesDep, project_id: ProjectId, exp_id: ExperimentId) -> Ok[list[Run]]:
        return ok(services.runs.list_runs(project_id, exp_id))

    @get("/runs/{run_id:str}", operation_id="GetRun", summary="Get run status + metrics", sync_to_thread=True,
         responses=error_responses(404, 409, 422))
    def get_run(self, services: ServicesDep, project_id: ProjectId, run_id: RunId, wait: WaitSeconds = 0) -> Ok[Run]:
        return ok(after_wait(lambda: services.runs.get_run(project_id, run_id), wait, services.settings))

    @post("/runs/{run_id:str}/stop", operation_id="StopRun", summary="Stop a running training",
          description="The worker finishes its current step, saves `last.ckpt` and exits `stopped`; "
                      "if it has not exited after the stop timeout its process group is killed (`killed: true`).",
          sync_to_thread=True, status_code=200, responses=error_responses(404, 409, 422))
    def stop_run(self, services: ServicesDep, project_id: ProjectId, run_id: RunId) -> Ok[Run]:
        return ok(services.runs.stop_run(project_id, run_id))

    @post("/runs/{run_id:str}/resume", operation_id="ResumeRun", summary="Resume an interrupted run",
          description="Continues a stopped, failed or interrupted run from `last.ckpt` (verified first); "
                      "an optional `max_epochs` extends it. A completed run cannot be resumed (409).",
          sync_to_thread=True, status_code=200, responses=error_responses(400, 404, 409, 422))
    def resume_run(self, services: ServicesDep, project_id: ProjectId, run_id: RunId,
                   data: JSONBody[RunResume | None] = None) -> Ok[Run]:
        max_epochs = data.max_epochs if data is not None else None
        return ok(services.runs.resume_run(project_id, run_id, max_epochs=max_epochs))

    @delete("/runs/{run_id:str}", operation_id="DeleteRun", summary="Delete a run", sync_to_thread=True,
            status_code=200, responses=error_responses(404, 409, 422))
    def delete_run(self, services: ServicesDep, project_id: ProjectId, run_id: RunId) -> Ok[Deleted]:
        services.runs.delete_run(project_id, run_id)
        return ok(Deleted(id=run_id))

    @get("/runs/{run_id:str}/metrics", operation_id="GetRunMetrics", summary="Get metrics JSON",
         description="`metrics.json`: one record per finished epoch (`epoch`, `train/loss`, `train/acc`, "
                     "`val/loss`, `val/acc`, `lr`, `time_s`, ...).", sync_to_thread=True,
         responses=error_responses(404, 409, 422))
    def get_metrics(self, services: ServicesDep, project_id: ProjectId, run_id: RunId) -> Ok[list[Metrics]]:
        return ok(services.runs.get_metrics(project_id, run_id))

    @get("/runs/{run_id:str}/stream", operation_id="StreamRunEvents", summary="SSE event stream",
         description="Server-Sent Events `status`, `progress`, `epoch`, `log` and `end` with strictly increasing "
                     "ids. `Last-Event-ID` (or `?last_event_id=`) replays what the client missed; a finished run "
                     "replays its history and closes.", sync_to_thread=True, media_type="text/event-stream",
         responses=error_responses(404, 409, 422))
    def stream_run(
        self,
        services: ServicesDep,
        project_id: ProjectId,
        run_id: RunId,
        # schema_extra: Litestar drops ge=0 from the document of an optional parameter (found by schema fuzzing)
        last_event_id_header: Annotated[int | None, HeaderParameter(name="Last-Event-ID", ge=0, required=False,
                                                                    schema_extra={"minimum": 0})] = None,
        last_event_id: Annotated[int | None, QueryParameter(name="last_event_id", ge=0, required=False,
                                                            schema_extra={"minimum": 0})] = None,
    ) -> ServerSentEvent:
        services.runs.run_dir(project_id, run_id)  # a 404 envelope before any event is sent
        after = last_event_id_header if last_event_id_header is not None else (last_event_id or 0)
        settings = services.settings
        reader = functools.partial(services.runs.events_after, project_id, run_id)
        return ServerSentEvent(follow_events(reader, after, settings.sse_poll_s, settings.sse_keepalive_s))


@contextlib.asynccontextmanager
async def job_queue_lifespan(app: Litestar) -> AsyncIterator[None]:
    """App lifespan: recover the jobs a previous server left, run the job queue while serving.

    Shutting down stops the supervision only; workers keep running and the
    next server adopts them.
    """
    queue = app.state.services.queue
    await anyio.to_thread.run_sync(queue.start)
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(queue.shutdown)
