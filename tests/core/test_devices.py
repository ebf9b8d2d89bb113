"""Training devices: CPU plus every GPU NVML reports; NVML itself is the mocked boundary."""

from __future__ import annotations

import pytest
import torch

from modelyard.core.devices import known_device_ids, list_devices
from tests.helpers.nvml import MIB, FakeNvml, install_fake_nvml


def test_every_nvml_gpu_is_listed_after_the_cpu_and_gpu0_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([(b"NVIDIA RTX 4090", 24564 * MIB, 22100 * MIB), ("NVIDIA RTX 4090", 24564 * MIB, 24000 * MIB)])
    install_fake_nvml(monkeypatch, fake)
    info = list_devices()
    assert info["devices"][0] == {"id": "cpu", "name": "CPU", "type": "cpu"}
    gpus = info["devices"][1:]
    assert [(g["id"], g["name"], g["type"]) for g in gpus] == [
        ("gpu:0", "NVIDIA RTX 4090", "gpu"),
        ("gpu:1", "NVIDIA RTX 4090", "gpu"),
    ]
    assert [(g["memory_total_mb"], g["memory_free_mb"]) for g in gpus] == [(24564, 22100), (24564, 24000)]
    assert info["default_selected"] == ["gpu:0"]
    assert fake.shutdowns == 1
    assert known_device_ids() == {"cpu", "gpu:0", "gpu:1"}


def test_gpu_utilisation_is_listed_where_nvml_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml([("NVIDIA A100", 80 * 1024 * MIB, 60 * 1024 * MIB), ("NVIDIA A100", 80 * 1024 * MIB, 80 * 1024 * MIB)],
                    utilization=[87, None])
    install_fake_nvml(monkeypatch, fake)
    gpus = list_devices()["devices"][1:]
    assert gpus[0]["utilization_percent"] == 87
    assert "utilization_percent" not in gpus[1]  # not supported there: absent, and the GPU is still listed
    assert gpus[1]["memory_free_mb"] == 80 * 1024


def test_cuda_fields_come_from_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch, FakeNvml([]))
    info = list_devices()
    assert info["cuda_available"] is torch.cuda.is_available()
    assert info["cuda_version"] == torch.version.cuda


@pytest.mark.parametrize("fail_on", ["init", "count", "memory"])
def test_nvml_failures_mean_cpu_only_not_an_error(monkeypatch: pytest.MonkeyPatch, fail_on: str) -> None:
    install_fake_nvml(monkeypatch, FakeNvml([("NVIDIA A100", 80 * 1024 * MIB, 80 * 1024 * MIB)], fail_on=fail_on))
    info = list_devices()
    assert info["devices"] == [{"id": "cpu", "name": "CPU", "type": "cpu"}]
    assert info["default_selected"] == ["cpu"]


def test_machine_without_the_nvml_library_lists_the_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch, None)  # `import pynvml` raises ImportError
    info = list_devices()
    assert info["devices"] == [{"id": "cpu", "name": "CPU", "type": "cpu"}]
    assert info["default_selected"] == ["cpu"]


def test_machine_with_nvml_but_no_gpu_lists_the_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch, FakeNvml([]))
    info = list_devices()
    assert [d["id"] for d in info["devices"]] == ["cpu"]
    assert info["default_selected"] == ["cpu"]
