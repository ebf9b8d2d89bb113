"""System API (reference section 7): health, devices, workspace."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch

import modelyard
from tests.helpers.nvml import MIB, FakeNvml, install_fake_nvml


def test_health_reports_status_version_and_growing_uptime(client) -> None:
    body = client.get("/api/system/health").json()
    assert body["status"] == "ok"
    data = body["data"]
    assert data["status"] == "healthy"
    assert data["version"] == modelyard.__version__
    assert isinstance(data["uptime_s"], (int, float)) and data["uptime_s"] >= 0
    time.sleep(0.05)
    assert client.get("/api/system/health").json()["data"]["uptime_s"] > data["uptime_s"]


def test_devices_on_this_machine_follow_the_reference_shape(client) -> None:
    data = client.get("/api/system/devices").json()["data"]
    assert set(data) == {"devices", "cuda_available", "cuda_version", "default_selected"}
    assert data["devices"][0] == {"id": "cpu", "name": "CPU", "type": "cpu"}
    gpus = [d for d in data["devices"] if d["type"] == "gpu"]
    for index, gpu in enumerate(gpus):
        assert gpu["id"] == f"gpu:{index}"
        assert gpu["memory_total_mb"] >= gpu["memory_free_mb"] >= 0
    assert data["default_selected"] == (["gpu:0"] if gpus else ["cpu"])
    assert data["cuda_available"] is torch.cuda.is_available()
    assert data["cuda_version"] == torch.version.cuda


def test_devices_list_every_nvml_gpu_with_name_and_memory(client, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([(b"NVIDIA RTX 4090", 24564 * MIB, 22100 * MIB), ("NVIDIA RTX 4090", 24564 * MIB, 24000 * MIB)])
    install_fake_nvml(monkeypatch, fake)
    data = client.get("/api/system/devices").json()["data"]
    assert data["devices"][0] == {"id": "cpu", "name": "CPU", "type": "cpu"}
    for device, (gpu_id, free) in zip(data["devices"][1:], [("gpu:0", 22100), ("gpu:1", 24000)], strict=True):
        assert device["id"] == gpu_id
        assert device["name"] == "NVIDIA RTX 4090"
        assert device["type"] == "gpu"
        assert (device["memory_total_mb"], device["memory_free_mb"]) == (24564, free)
    assert data["default_selected"] == ["gpu:0"]


def test_devices_without_nvml_is_cpu_only_not_an_error(client, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch, FakeNvml([], fail_on="init"))
    response = client.get("/api/system/devices")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["devices"] == [{"id": "cpu", "name": "CPU", "type": "cpu"}]
    assert data["default_selected"] == ["cpu"]


def _file_bytes(folder: Path) -> int:
    return sum(os.lstat(p).st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def test_workspace_stats_count_projects_and_their_bytes(client, workspace_dir: Path) -> None:
    ids = [client.post("/api/projects", json={"name": n}).json()["data"]["id"] for n in ("a", "b")]
    (workspace_dir / "projects" / ids[0] / "blob.bin").write_bytes(b"\0" * 12_345)

    data = client.get("/api/system/workspace").json()["data"]

    assert data["path"] == str(workspace_dir.resolve())
    assert data["project_count"] == 2
    per_project = {p["id"]: p["bytes"] for p in data["projects"]}
    assert per_project == {pid: _file_bytes(workspace_dir / "projects" / pid) for pid in ids}
    assert per_project[ids[0]] - per_project[ids[1]] == 12_345  # same-size project.json files otherwise
    assert data["workspace_bytes"] == _file_bytes(workspace_dir)
    assert data["workspace_bytes"] >= sum(per_project.values())


def test_workspace_stats_report_the_disk_of_the_workspace(client, workspace_dir: Path) -> None:
    disk = client.get("/api/system/workspace").json()["data"]["disk"]
    usage = shutil.disk_usage(workspace_dir)
    assert disk["total_bytes"] == usage.total
    assert 0 <= disk["used_bytes"] <= disk["total_bytes"]
    assert 0 <= disk["free_bytes"] <= disk["total_bytes"]


def test_workspace_stats_of_an_empty_workspace(client) -> None:
    data = client.get("/api/system/workspace").json()["data"]
    assert (data["project_count"], data["projects"]) == (0, [])
