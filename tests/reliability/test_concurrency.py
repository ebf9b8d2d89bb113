"""Concurrent writers on one project: no update is lost, and no reader ever sees a torn file.

Requests go through the real app (``TestClient`` runs each sync handler in a
worker thread, so they really overlap) and are released together by a
barrier. A reader thread parses the project's JSON files continuously while
they run. One test adds writers in other processes, which only the
``flock`` side of ``core/locks.py`` can keep in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from modelyard.core.sample_data import generate_shapes
from tests.helpers.datasets import create_project_with_dataset

WRITERS = 12


class ParsingReader:
    """Parses ``paths`` in a loop until stopped; remembers every failure (a torn or half-written file)."""

    def __init__(self, paths: Callable[[], list[Path]]) -> None:
        self._paths = paths
        self._halt = threading.Event()
        self.parses = 0
        self.failures: list[str] = []
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._halt.is_set():
            for path in self._paths():
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue  # not written yet, or its folder was just deleted
                try:
                    json.loads(data)
                    self.parses += 1
                except ValueError as exc:
                    self.failures.append(f"{path.name}: {exc}")

    def __enter__(self) -> ParsingReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join(10)

    def assert_clean(self) -> None:
        assert self.failures == [], self.failures[:5]
        assert self.parses > 0, "the reader never saw the file"


def together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` in parallel threads, released at the same instant; results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def dataset_project(services, client) -> str:
    """A project with 40 real images and one split named ``default`` (index 0)."""
    return create_project_with_dataset(services, per_class=10, size=16, num_classes=4)


@pytest.fixture
def halted_queue(services, client) -> Iterator[None]:
    """Runs stay ``pending``: these tests are about the API's writes, not about training."""
    services.queue.shutdown()
    yield


def _dataset(services, project_id: str) -> dict[str, Any]:
    return json.loads(services.workspace.dataset_json(project_id).read_bytes())


def test_concurrent_split_creates_and_deletes_lose_no_update(client, services, dataset_project) -> None:
    project_id = dataset_project
    path = services.workspace.dataset_json(project_id)

    def create(name: str) -> Callable[[], Any]:
        body = {"name": name, "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": len(name)}
        return lambda: client.post(f"/api/splits/{project_id}", json=body)

    with ParsingReader(lambda: [path]) as reader:
        first = together([create(f"split-{i}") for i in range(WRITERS)])
        assert [r.status_code for r in first] == [201] * WRITERS, [r.text for r in first if r.status_code != 201]
        assert sorted(r.json()["data"]["split_index"] for r in first) == list(range(1, WRITERS + 1))

        delete_index_1 = lambda: client.delete(f"/api/splits/{project_id}/1")  # noqa: E731 (never the default at 0)
        mixed = together([create(f"late-{i}") for i in range(6)] + [delete_index_1] * 6)
    reader.assert_clean()

    assert [r.status_code for r in mixed] == [201] * 6 + [200] * 6, [r.text for r in mixed]
    deleted = {r.json()["data"]["name"] for r in mixed[6:]}
    assert len(deleted) == 6  # six deletes removed six different splits
    expected = ({f"split-{i}" for i in range(WRITERS)} | {f"late-{i}" for i in range(6)}) - deleted
    doc = _dataset(services, project_id)
    assert doc["split_names"][0] == "default"
    assert set(doc["split_names"][1:]) == expected and len(doc["split_names"]) == 1 + len(expected)
    assert {len(image["split"]) for image in doc["images"]} == {len(doc["split_names"])}


def test_concurrent_imports_merge_every_image(client, services, project_id, import_root: Path) -> None:
    folders = []
    for index in range(6):
        folder = import_root / f"batch-{index}"
        generate_shapes(folder, per_class=2, size=16, seed=100 + index, shapes=("circle", "star"))
        folders.append(folder)
    path = services.workspace.dataset_json(project_id)

    def importing(folder: Path) -> Callable[[], Any]:
        return lambda: client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(folder)})

    with ParsingReader(lambda: [path]) as reader:
        responses = together([importing(folder) for folder in folders])
    reader.assert_clean()

    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    imported = sum(r.json()["data"]["imported"] for r in responses)
    doc = _dataset(services, project_id)
    assert imported == len(doc["images"]) == 24
    stored = {p.name for p in services.workspace.images_dir(project_id).iterdir()}
    assert stored == {image["filename"] for image in doc["images"]}  # no orphan file, no missing file
    assert sorted(doc["classes"]) == ["circle", "star"]
    assert files_left(services.workspace.staging_dir) == []


def files_left(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


PATCHES: list[dict[str, Any]] = [
    {"description": "patched description"},
    {"config": {"model": {"dropout": 0.25}}},
    {"config": {"data": {"batch_size": 7}}},
    {"config": {"training": {"max_epochs": 3}}},
    {"config": {"training": {"seed": 1234}}},
    {"config": {"training": {"optimizer": {"lr": 0.005}}}},
    {"config": {"training": {"optimizer": {"weight_decay": 0.02}}}},
    {"config": {"training": {"loss": {"label_smoothing": 0.1}}}},
    {"config": {"training": {"early_stopping": {"patience": 4}}}},
    {"config": {"training": {"batch_multiplier": 2}}},
]


def test_concurrent_experiment_patches_and_run_starts_keep_every_change(
    client, services, dataset_project, halted_queue
) -> None:
    project_id = dataset_project
    base = f"/api/training/{project_id}/experiments"
    created = client.post(base, json={"name": "contended", "config": {"model": {"architecture": "simple_cnn"}}})
    assert created.status_code == 201, created.text
    exp_id = created.json()["data"]["id"]
    folder = services.workspace.experiments_dir(project_id) / exp_id

    def patching(body: dict[str, Any]) -> Callable[[], Any]:
        return lambda: client.patch(f"{base}/{exp_id}", json=body)

    start = lambda: client.post(f"{base}/{exp_id}/run")  # noqa: E731
    with ParsingReader(lambda: [folder / "experiment.json", *folder.glob("runs/*/run.json")]) as reader:
        responses = together([patching(body) for body in PATCHES] + [start] * 6)
    reader.assert_clean()

    patched, started = responses[: len(PATCHES)], responses[len(PATCHES) :]
    assert [r.status_code for r in patched] == [200] * len(PATCHES), [r.text for r in patched]
    assert [r.status_code for r in started] == [201] * 6, [r.text for r in started]
    config = client.get(f"{base}/{exp_id}").json()["data"]
    assert config["description"] == "patched description"
    assert config["config"]["model"]["dropout"] == 0.25
    assert config["config"]["model"]["architecture"] == "simple_cnn"
    assert config["config"]["data"]["batch_size"] == 7
    training = config["config"]["training"]
    assert (training["max_epochs"], training["seed"], training["batch_multiplier"]) == (3, 1234, 2)
    assert (training["optimizer"]["lr"], training["optimizer"]["weight_decay"]) == (0.005, 0.02)
    assert training["loss"]["label_smoothing"] == 0.1
    assert training["early_stopping"]["patience"] == 4

    run_ids = {r.json()["data"]["run_id"] for r in started}
    assert len(run_ids) == 6
    listed = client.get(f"{base}/{exp_id}/runs").json()["data"]
    assert {run["id"] for run in listed} == run_ids
    assert {run["status"] for run in listed} == {"pending"}


def test_concurrent_project_creates_and_deletes(client, services) -> None:
    doomed = [client.post("/api/projects", json={"name": f"doomed {i}"}).json()["data"]["id"] for i in range(6)]
    creates = [lambda i=i: client.post("/api/projects", json={"name": f"new {i}"}) for i in range(WRITERS)]
    deletes = [lambda p=p: client.delete(f"/api/projects/{p}") for p in doomed]
    responses = together(creates + deletes)
    assert [r.status_code for r in responses] == [201] * WRITERS + [200] * 6, [r.text for r in responses]
    created = {r.json()["data"]["id"] for r in responses[:WRITERS]}
    listed = {p["id"] for p in client.get("/api/projects").json()["data"]}
    assert listed == created
    assert {p.name for p in services.workspace.projects_dir.iterdir()} == created


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from modelyard.core.datasets import SplitService
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.datasets.store import DatasetStore
    from modelyard.core.workspace import Workspace

    root, project_id, prefix, count, go = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])
    workspace = Workspace(Path(root))  # no prepare(): another process is using this workspace
    splits = SplitService(workspace, DatasetStore(workspace))
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    for index in range(count):
        splits.create(project_id, f"{prefix}-{index}", Ratios(train=0.6, val=0.2, test=0.2), seed=index)
    """
)


def test_writers_in_other_processes_lose_no_update(client, services, dataset_project, tmp_path: Path) -> None:
    """Two extra processes and the API create splits on one dataset at the same moment: all of them land."""
    project_id = dataset_project
    per_writer = 8
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(services.workspace.root), project_id, name, str(per_writer), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name in ("proc-a", "proc-b")
    ]
    for process in processes:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready", process.stderr
    path = services.workspace.dataset_json(project_id)

    def create(index: int) -> Callable[[], Any]:
        body = {"name": f"api-{index}", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": index}
        return lambda: client.post(f"/api/splits/{project_id}", json=body)

    with ParsingReader(lambda: [path]) as reader:
        go.touch()
        responses = together([create(index) for index in range(per_writer)])
        for process in processes:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr
    reader.assert_clean()
    assert [r.status_code for r in responses] == [201] * per_writer
    names = _dataset(services, project_id)["split_names"]
    expected = {f"{who}-{i}" for who in ("proc-a", "proc-b", "api") for i in range(per_writer)}
    assert set(names) == {"default"} | expected and len(names) == 1 + len(expected)
