"""Faults: a full disk while writing, corrupted workspace files. Nothing is lost, nothing is half-written.

The disk-full cases use ``DiskFull`` (``ENOSPC`` at the OS boundary, for one
folder); the code under test is the real product. The SIGKILL-during-import
case is in ``test_kill_during_import.py`` (it needs a real server process).
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from modelyard.core.errors import StorageFullError
from modelyard.core.sample_data import generate_shapes
from modelyard.core.training.worker.callbacks import AtomicCheckpointIO
from modelyard.core.training.worker.engine import train_run
from modelyard.core.training.checkpoints import usable_checkpoint
from modelyard.core.training.run_folder import create_run_folder, read_run, touch_heartbeat
from tests.conftest import TINY_TRAINING_CONFIG, assert_error
from tests.helpers.datasets import create_project_with_dataset
from tests.reliability.faults import DiskFull, files_under, snapshot, temp_files_under

SPLIT = {"name": "80-10-10", "ratios": {"train": 0.8, "val": 0.1, "test": 0.1}, "seed": 1}


def _shapes(root: Path, name: str, seed: int, per_class: int = 3) -> Path:
    folder = root / name
    generate_shapes(folder, per_class=per_class, size=16, seed=seed, shapes=("circle", "square"))
    return folder


def _import_local(client, project_id: str, folder: Path):
    return client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(folder)})


@pytest.fixture
def imported(client, project_id: str, import_root: Path, services) -> Path:
    """``project_id`` with a real imported dataset of 6 images; returns its dataset folder."""
    response = _import_local(client, project_id, _shapes(import_root, "first", seed=1))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["imported"] == 6
    return services.workspace.dataset_dir(project_id)


def _assert_disk_full(response) -> None:
    error = assert_error(response, 507, "INSUFFICIENT_STORAGE")
    assert "disk" in error["message"] and "full" in error["message"]


# -- disk full ---------------------------------------------------------------------------------


def test_disk_full_while_writing_project_json_keeps_the_old_file(client, project_id, services, monkeypatch) -> None:
    folder = services.workspace.project_dir(project_id)
    before = snapshot(folder)
    disk = DiskFull(monkeypatch, folder)
    _assert_disk_full(client.patch(f"/api/projects/{project_id}", json={"name": "Renamed"}))
    assert disk.hits >= 1
    assert snapshot(folder) == before
    assert temp_files_under(services.workspace.root) == []
    disk.free()
    renamed = client.patch(f"/api/projects/{project_id}", json={"name": "Renamed"})
    assert renamed.status_code == 200, renamed.text
    assert client.get(f"/api/projects/{project_id}").json()["data"]["name"] == "Renamed"


def test_disk_full_while_saving_dataset_json_keeps_the_old_dataset(client, project_id, imported, services, monkeypatch) -> None:
    before = snapshot(imported)
    disk = DiskFull(monkeypatch, imported)
    _assert_disk_full(client.post(f"/api/splits/{project_id}", json=SPLIT))
    assert snapshot(imported) == before
    assert temp_files_under(services.workspace.root) == []
    disk.free()
    assert client.post(f"/api/splits/{project_id}", json=SPLIT).status_code == 201
    assert client.get(f"/api/datasets/{project_id}").json()["data"]["split_names"] == ["80-10-10"]


def test_disk_full_while_staging_a_local_import_changes_nothing(
    client, project_id, imported, services, import_root, monkeypatch
) -> None:
    second = _shapes(import_root, "second", seed=2)
    before = snapshot(imported)
    disk = DiskFull(monkeypatch, services.workspace.staging_dir)
    _assert_disk_full(_import_local(client, project_id, second))
    assert disk.hits >= 1
    assert snapshot(imported) == before
    assert files_under(services.workspace.staging_dir) == []
    disk.free()
    retried = _import_local(client, project_id, second)
    assert retried.status_code == 200, retried.text
    assert retried.json()["data"]["num_images"] == 12


def test_disk_full_while_committing_an_import_rolls_it_back(
    client, project_id, imported, services, import_root, monkeypatch
) -> None:
    """The staged files are moved in, then ``dataset.json`` cannot be written: the moves are undone."""
    before = snapshot(imported)
    disk = DiskFull(monkeypatch, imported)
    _assert_disk_full(_import_local(client, project_id, _shapes(import_root, "second", seed=2)))
    assert disk.hits >= 1
    assert snapshot(imported) == before  # no stray image, the old dataset.json
    assert files_under(services.workspace.staging_dir) == []
    assert temp_files_under(services.workspace.root) == []


def _zip_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.png")):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


@pytest.mark.parametrize("where", ["upload-", "import-"], ids=["receiving-the-upload", "extracting-the-zip"])
def test_disk_full_during_a_zip_upload_changes_nothing(
    client, project_id, imported, services, import_root, monkeypatch, where: str
) -> None:
    archive = _zip_of(_shapes(import_root, "zipped", seed=3))
    before = snapshot(imported)
    disk = DiskFull(monkeypatch, services.workspace.staging_dir, match=where)
    response = client.post(
        f"/api/datasets/{project_id}/import/upload", files={"file": ("shapes.zip", archive, "application/zip")}
    )
    _assert_disk_full(response)
    assert disk.hits >= 1
    assert snapshot(imported) == before
    assert files_under(services.workspace.staging_dir) == []


def test_disk_full_while_caching_a_thumbnail_is_a_clear_error_then_works(
    client, project_id, imported, services, monkeypatch
) -> None:
    filename = client.get(f"/api/datasets/{project_id}/images").json()["data"]["items"][0]["filename"]
    thumbs = services.workspace.thumbs_dir(project_id)
    disk = DiskFull(monkeypatch, thumbs)
    _assert_disk_full(client.get(f"/api/datasets/{project_id}/thumbnails/{filename}"))
    assert disk.hits >= 1
    assert files_under(thumbs) == []  # neither a torn thumbnail nor a temp file
    disk.free()
    response = client.get(f"/api/datasets/{project_id}/thumbnails/{filename}")
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as thumb:
        assert thumb.size == (16, 16)


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(trained_run, monkeypatch) -> None:
    folder = trained_run.run_dir / "checkpoints"
    last = folder / "last.ckpt"
    before = snapshot(folder)
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint["epoch"] = int(checkpoint["epoch"]) + 1  # a newer state that must not half-replace the old one
    disk = DiskFull(monkeypatch, folder)
    with pytest.raises(StorageFullError, match="full"):
        AtomicCheckpointIO().save_checkpoint(checkpoint, last)
    assert disk.hits >= 1
    assert snapshot(folder) == before
    point = usable_checkpoint(folder)
    assert point is not None and point.epochs_done == 2


def test_training_run_whose_checkpoint_hits_a_full_disk_fails_with_a_clear_error(services, monkeypatch) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16, num_classes=2)
    config = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 1, "scheduler": {"name": "none"}}}
    experiment = services.experiments.create(project_id, "full-disk", config=config)
    run_dir = create_run_folder(
        services.workspace, project_id, experiment["id"], services.experiments.run_config(project_id, experiment["id"])
    )
    disk = DiskFull(monkeypatch, run_dir / "checkpoints")
    assert train_run(services.workspace, run_dir) == "failed"
    assert disk.hits >= 1
    record = read_run(run_dir)
    assert record.error.type == "StorageFullError", record.error
    assert "full" in record.error.message
    assert files_under(run_dir / "checkpoints") == []  # no torn .ckpt, no temp file


# -- corrupted files -----------------------------------------------------------------------------


def test_corrupt_dataset_json_is_a_clear_409_for_that_project_only(
    client, project_id, imported, services, import_root
) -> None:
    other = client.post("/api/projects", json={"name": "Healthy"}).json()["data"]["id"]
    assert _import_local(client, other, _shapes(import_root, "other", seed=4)).status_code == 200
    dataset_json = imported / "dataset.json"
    broken = dataset_json.read_bytes()[: len(dataset_json.read_bytes()) // 2]
    dataset_json.write_bytes(broken)

    for response in (
        client.get(f"/api/datasets/{project_id}"),
        client.get(f"/api/datasets/{project_id}/images"),
        client.get(f"/api/splits/{project_id}"),
        client.post(f"/api/splits/{project_id}", json=SPLIT),
        _import_local(client, project_id, _shapes(import_root, "more", seed=5)),
    ):
        error = assert_error(response, 409, "CONFLICT")
        assert "dataset.json" in error["message"]
    assert dataset_json.read_bytes() == broken  # never "repaired" into an empty dataset behind the user's back
    assert files_under(services.workspace.staging_dir) == []

    listed = client.get("/api/projects")
    assert listed.status_code == 200
    assert {project_id, other} <= {p["id"] for p in listed.json()["data"]}
    assert client.get(f"/api/datasets/{other}").json()["data"]["num_images"] == 6
    first = client.get(f"/api/datasets/{other}/images").json()["data"]["items"][0]["filename"]
    assert client.get(f"/api/datasets/{other}/thumbnails/{first}").status_code == 200
    assert client.post(f"/api/splits/{other}", json=SPLIT).status_code == 201

    # The way out: clearing the broken dataset works, and the project is usable again.
    assert client.delete(f"/api/datasets/{project_id}").status_code == 200
    assert client.get(f"/api/datasets/{project_id}").json()["data"]["num_images"] == 0


def test_corrupt_run_json_is_a_clear_409_for_that_run_only(client, trained_run, services) -> None:
    healthy = client.post("/api/projects", json={"name": "Healthy"}).json()["data"]["id"]
    run_json = trained_run.run_dir / "run.json"
    run_json.write_bytes(b'{"id": "' + trained_run.run_id.encode() + b'", "status": "runn')
    base = f"/api/training/{trained_run.project_id}"

    for response in (client.get(f"{base}/runs/{trained_run.run_id}"), client.post(f"{base}/runs/{trained_run.run_id}/stop")):
        error = assert_error(response, 409, "CONFLICT")
        assert "run.json" in error["message"]
    assert client.get(f"{base}/experiments").status_code == 200  # the experiment list skips the unreadable run
    assert client.get(f"{base}/experiments/{trained_run.experiment_id}").status_code == 200
    assert client.get("/api/system/health").status_code == 200
    assert healthy in {p["id"] for p in client.get("/api/projects").json()["data"]}
    assert client.get(f"/api/training/{healthy}/experiments").status_code == 200
    # The way out: the broken run can be deleted, unless its worker still beats (then it may be training).
    heartbeat = trained_run.run_dir / "heartbeat"
    touch_heartbeat(trained_run.run_dir, os.getpid())
    assert_error(client.delete(f"{base}/runs/{trained_run.run_id}"), 409, "CONFLICT")
    long_ago = time.time() - 3600
    os.utime(heartbeat, (long_ago, long_ago))  # the worker ended an hour ago
    assert client.delete(f"{base}/runs/{trained_run.run_id}").status_code == 200
    assert not trained_run.run_dir.exists()


def test_storage_full_error_is_still_the_os_error_it_translates(tmp_path) -> None:
    """Callers that handle disk errors as ``OSError`` keep working, and the message is not wrapped twice."""
    import errno

    from modelyard.core.storage import translate_storage_full

    with pytest.raises(StorageFullError) as raised, translate_storage_full("the import"), translate_storage_full("x.json"):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert isinstance(raised.value, OSError) and raised.value.errno == errno.ENOSPC
    assert raised.value.message.count("full") == 1 and "x.json" in raised.value.message
