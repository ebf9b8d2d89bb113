"""``GET .../runs/{run_id}/stream``: Server-Sent Events of a run (DESIGN section 5).

The follower is tested on run folders written by the protocol (exact event
histories, live appends from a thread); the endpoint through the TestClient,
and once on a real training run.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from modelyard.api.run_stream import follow_events
from modelyard.core.ids import new_id
from modelyard.core.training.run_folder import EventLog, update_run
from modelyard.core.workspace import Workspace
from tests.conftest import assert_error
from tests.helpers.run_fixtures import make_run_folder


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Split an SSE body into messages: ``{"id", "event", "data"}`` or ``{"comment"}``."""
    messages = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        message: dict[str, Any] = {}
        for line in block.split("\n"):
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "":
                message["comment"] = value
            elif field == "id":
                message["id"] = int(value)
            elif field == "data":
                message["data"] = json.loads(value)
            else:
                message[field] = value
        messages.append(message)
    return messages


def write_history(workspace: Workspace, run_dir: Path, status: str = "completed") -> list[dict[str, Any]]:
    """A finished run's events as a worker writes them; returns them as read back."""
    events = EventLog(workspace, run_dir)
    events.append("status", {"status": "running"})
    for epoch in (1, 2):
        events.append("progress", {"epoch": epoch, "step": 1, "steps_per_epoch": 1})
        events.append("log", {"message": f"epoch {epoch} done"})
        events.append("epoch", {"epoch": epoch, "train/loss": 1.0 / epoch, "val/loss": 1.1 / epoch})
    events.append("status", {"status": status})
    events.append("end", {"status": status})
    update_run(workspace, run_dir, lambda r: r.with_fields(status=status))
    return events.read()


@pytest.fixture
def finished_run(services) -> tuple[str, Path, list[dict[str, Any]]]:
    project = services.projects.create("Stream")
    run_dir = make_run_folder(services.workspace, project.id, status="running")
    history = write_history(services.workspace, run_dir)
    return project.id, run_dir, history


def _stream_url(project_id: str, run_id: str) -> str:
    return f"/api/training/{project_id}/runs/{run_id}/stream"


# -- the endpoint -------------------------------------------------------------------


def test_finished_run_replays_its_whole_history_and_closes(client, finished_run) -> None:
    project_id, run_dir, history = finished_run
    response = client.get(_stream_url(project_id, run_dir.name))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = parse_sse(response.text)
    assert [(m["id"], m["event"], m["data"]) for m in messages] == [(e["id"], e["event"], e["data"]) for e in history]
    ids = [m["id"] for m in messages]
    assert ids == sorted(set(ids)) and ids[0] == 1
    assert messages[-1]["event"] == "end"


def test_last_event_id_replays_exactly_the_missed_events(client, finished_run) -> None:
    project_id, run_dir, history = finished_run
    response = client.get(_stream_url(project_id, run_dir.name), headers={"Last-Event-ID": "4"})
    assert [m["id"] for m in parse_sse(response.text)] == [e["id"] for e in history if e["id"] > 4]
    by_query = client.get(_stream_url(project_id, run_dir.name) + "?last_event_id=6")
    assert [m["id"] for m in parse_sse(by_query.text)] == [e["id"] for e in history if e["id"] > 6]


def test_client_that_saw_everything_gets_an_empty_stream_that_closes(client, finished_run) -> None:
    project_id, run_dir, history = finished_run
    response = client.get(_stream_url(project_id, run_dir.name), headers={"Last-Event-ID": str(history[-1]["id"])})
    assert response.status_code == 200 and parse_sse(response.text) == []


def test_malformed_last_event_id_is_a_validation_error(client, finished_run) -> None:
    project_id, run_dir, _ = finished_run
    assert_error(client.get(_stream_url(project_id, run_dir.name), headers={"Last-Event-ID": "abc"}), 422,
                 "VALIDATION_ERROR")
    assert_error(client.get(_stream_url(project_id, run_dir.name) + "?last_event_id=-1"), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("run_id", "status"),
    [("run-00000000", 404), ("run-../../x", 404), ("..", 404), ("run-ABCDEFGH", 404), ("%2e%2e%2fetc", 404),
     ("run-0000000%00", 404), ("run-" + "a" * 80, 422)],
)
def test_stream_of_unknown_or_hostile_run_id_is_an_error_envelope(client, project_id, run_id, status) -> None:
    code = "NOT_FOUND" if status == 404 else "VALIDATION_ERROR"
    assert_error(client.get(_stream_url(project_id, run_id)), status, code)


def test_stream_of_unknown_project_is_not_found(client) -> None:
    assert_error(client.get(_stream_url("proj-00000000", "run-00000000")), 404, "NOT_FOUND")


# -- the follower ----------------------------------------------------------------------


def _collect(read, after_id: int = 0, poll_s: float = 0.02, keepalive_s: float = 60.0,
             end_grace_s: float = 0.5) -> list:
    async def run() -> list:
        return [message async for message in follow_events(read, after_id, poll_s, keepalive_s, end_grace_s)]

    return anyio.run(run)


def _reader(services, project_id: str, run_dir: Path):
    return lambda after: services.runs.events_after(project_id, run_dir.name, after)


def test_live_events_are_streamed_with_keep_alive_comments_until_the_end(services) -> None:
    project = services.projects.create("Live")
    run_dir = make_run_folder(services.workspace, project.id, status="running")
    events = EventLog(services.workspace, run_dir)
    events.append("status", {"status": "running"})

    def worker() -> None:
        time.sleep(0.4)
        events.append("epoch", {"epoch": 1})
        time.sleep(0.4)
        update_run(services.workspace, run_dir, lambda r: r.with_fields(status="completed"))
        events.append("end", {"status": "completed"})

    thread = threading.Thread(target=worker)
    thread.start()
    messages = _collect(_reader(services, project.id, run_dir), keepalive_s=0.15)
    thread.join()
    named = [(m.id, m.event) for m in messages if m.comment is None]
    assert named == [(1, "status"), (2, "epoch"), (3, "end")]
    comments = [m for m in messages if m.comment is not None]
    assert comments and all(m.comment == "keep-alive" and m.data is None for m in comments)
    assert b"\r\n: keep-alive\r\n" in b"\r\n" + comments[0].encode()


def test_a_resumed_run_streams_past_its_earlier_end_event(services) -> None:
    project = services.projects.create("Resumed")
    run_dir = make_run_folder(services.workspace, project.id, status="running")
    events = EventLog(services.workspace, run_dir)
    events.append("status", {"status": "stopped"})
    events.append("end", {"status": "stopped"})
    events.append("status", {"status": "running"})
    events.append("epoch", {"epoch": 2})
    events.append("end", {"status": "completed"})
    update_run(services.workspace, run_dir, lambda r: r.with_fields(status="completed"))
    messages = _collect(_reader(services, project.id, run_dir))
    assert [m.id for m in messages] == [1, 2, 3, 4, 5]


def test_a_finished_run_whose_end_event_is_missing_closes_after_a_grace(services) -> None:
    project = services.projects.create("Torn")
    run_dir = make_run_folder(services.workspace, project.id, status="failed")
    EventLog(services.workspace, run_dir).append("status", {"status": "failed"})
    started = time.monotonic()
    messages = _collect(_reader(services, project.id, run_dir), end_grace_s=0.3)
    assert [m.event for m in messages] == ["status"]
    assert 0.25 <= time.monotonic() - started < 5


def test_a_run_deleted_while_followed_ends_the_stream(services) -> None:
    project = services.projects.create("Gone")
    run_dir = make_run_folder(services.workspace, project.id, status="running")
    EventLog(services.workspace, run_dir).append("status", {"status": "running"})
    threading.Timer(0.2, lambda: __import__("shutil").rmtree(run_dir)).start()
    messages = _collect(_reader(services, project.id, run_dir))
    assert [m.event for m in messages] == ["status"]


def test_unknown_run_id_in_a_project_is_not_found(client, project_id) -> None:
    assert_error(client.get(_stream_url(project_id, new_id("run"))), 404, "NOT_FOUND")
