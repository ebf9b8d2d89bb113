"""Predict over real HTTP: a uvicorn server, 20 concurrent clients, answers batched together yet each its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from modelyard.api.app import create_app
from tests.helpers.live_server import serve_in_thread

CLIENTS = 20
#: long enough that requests sent together land in one window of the batcher, whatever the machine's load
BATCH_WAIT_MS = 150.0


@pytest.fixture
def server_url(settings, services, trained_run) -> Iterator[str]:
    """The app ``create_app`` builds, served by uvicorn in a thread on a free port (the CLI's server, in-process)."""
    settings.predict_batch_wait_ms = BATCH_WAIT_MS
    with serve_in_thread(create_app(settings, services)) as url:
        yield url


def test_concurrent_clients_are_batched_and_each_gets_its_own_answer(server_url, services, trained_run) -> None:
    project = trained_run.project_id
    predict_url = f"{server_url}/api/predict/{project}"

    def one(name: str, data: bytes) -> dict:
        with httpx.Client(timeout=60) as http:
            response = http.post(predict_url, files=[("files", (name, data, "image/png"))], data={"top_k": "3"})
        assert response.status_code == 200, response.text
        return response.json()["data"]["results"][0]

    with httpx.Client(base_url=server_url, timeout=60) as http:
        loaded = http.post(f"/api/predict/{project}/models", json={"run_id": trained_run.run_id, "device": "cpu"})
        assert loaded.status_code == 201, loaded.text
        model_id = loaded.json()["data"]["id"]
        images = services.workspace.images_dir(project)
        files = [(p.name, p.read_bytes()) for p in sorted(images.iterdir())[:CLIENTS]]
        single = {name: one(name, data) for name, data in files}
        before = http.get(f"/api/predict/{project}/models/{model_id}").json()["data"]

        answers: dict[str, dict] = {}
        failures: list[BaseException] = []
        barrier = threading.Barrier(CLIENTS)

        def client(name: str, data: bytes) -> None:
            try:
                barrier.wait()
                answers[name] = one(name, data)
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                failures.append(exc)

        threads = [threading.Thread(target=client, args=file) for file in files]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == [] and len(answers) == CLIENTS
        after = http.get(f"/api/predict/{project}/models/{model_id}").json()["data"]

    for name, result in answers.items():
        expected = single[name]
        assert result["filename"] == name
        assert [p["class_id"] for p in result["predictions"]] == [p["class_id"] for p in expected["predictions"]]
        for got, wanted in zip(result["predictions"], expected["predictions"], strict=True):
            assert abs(got["confidence"] - wanted["confidence"]) < 1e-5, name
    assert after["requests"] - before["requests"] == CLIENTS
    assert after["images"] - before["images"] == CLIENTS
    assert after["batches"] - before["batches"] < CLIENTS  # requests shared forward passes
