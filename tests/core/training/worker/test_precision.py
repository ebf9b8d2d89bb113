"""Precision (issue 12 item 5): what ``auto`` picks on which GPUs, and CPU training in bf16-mixed."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from modelyard.core.errors import ValidationError
from modelyard.core.jsonio import read_json
from modelyard.core.training.config import parse_config
from modelyard.core.training.worker.engine import choose_precision, hardware_plan, train_run
from modelyard.plugins.classification.module import ClassificationModule
from modelyard.core.training.run_folder import create_run_folder, read_run
from tests.conftest import TINY_TRAINING_CONFIG
from tests.helpers.datasets import create_project_with_dataset

_NAMES = itertools.count()


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> dict[int, tuple[int, int]]:
    """Fake GPUs by compute capability; ``is_bf16_supported`` says yes to all, as it does for emulated bf16."""
    capabilities: dict[int, tuple[int, int]] = {}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capabilities[int(index)])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return capabilities


def _plan(devices: list[str], precision: str = "auto") -> Any:
    return hardware_plan(parse_config({"hardware": {"devices": devices}, "training": {"precision": precision}}))


def test_auto_is_bf16_when_every_configured_gpu_has_native_bf16(gpus: dict) -> None:
    gpus.update({0: (8, 0), 1: (9, 0), 2: (7, 5)})
    plan = _plan(["gpu:0", "gpu:1"])
    assert plan.precision == "bf16-mixed" and "cuda:0, cuda:1" in plan.precision_reason


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), "bf16-mixed"), ((7, 5), "16-mixed"), ((6, 1), "16-mixed")])
def test_compute_capability_8_0_is_the_bf16_boundary(gpus: dict, capability: tuple[int, int], expected: str) -> None:
    gpus[0] = capability
    assert _plan(["gpu:0"]).precision == expected


def test_one_gpu_without_native_bf16_makes_auto_use_16_mixed_and_says_which(gpus: dict) -> None:
    gpus.update({0: (8, 6), 1: (7, 5)})  # the current device (0) would have said bf16
    plan = _plan(["gpu:0", "gpu:1"])
    assert (plan.precision, plan.precision_reason) == ("16-mixed", "cuda:1 (compute 7.5) has no native bf16")
    assert _plan(["gpu:1"], "bf16-mixed").precision == "bf16-mixed"  # an explicit choice is kept


def test_auto_is_full_precision_on_the_cpu() -> None:
    assert choose_precision("auto", "cpu")[0] == "32-true" and _plan(["cpu"]).precision == "32-true"


def test_16_mixed_on_the_cpu_is_refused_when_the_experiment_is_saved(services: Any) -> None:
    # Lightning has no fp16 AMP on the CPU: it would warn and silently train in bf16 instead.
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    with pytest.raises(ValidationError) as caught:
        services.experiments.create(project_id, "fp16", config={**TINY_TRAINING_CONFIG,
                                                                "training": {"precision": "16-mixed"}})
    assert caught.value.field == "config.training.precision" and "bf16-mixed" in caught.value.message


@pytest.mark.parametrize(("requested", "precision", "dtype"), [("bf16-mixed", "bf16-mixed", torch.bfloat16),
                                                               ("auto", "32-true", None)])
def test_cpu_training_in_the_chosen_precision_records_what_and_why(services: Any, monkeypatch: pytest.MonkeyPatch,
                                                                  requested: str, precision: str, dtype: Any) -> None:
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    config = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 2, "scheduler": {"name": "none"},
                                                   "precision": requested}}
    experiment = services.experiments.create(project_id, f"p-{next(_NAMES)}", config=config)
    run_dir = create_run_folder(services.workspace, project_id, experiment["id"],
                                services.experiments.run_config(project_id, experiment["id"]))
    seen: list[Any] = []
    original = ClassificationModule.training_step

    def training_step(self: ClassificationModule, batch: Any, batch_idx: int) -> Any:
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationModule, "training_step", training_step)

    assert train_run(services.workspace, run_dir) == "completed"

    assert set(seen) == {dtype}  # every step ran under that autocast (or none)
    choice = read_run(run_dir).precision
    assert choice.requested == requested and choice.precision == precision and choice.reason
    facts = read_json(run_dir / "reproducibility.json")
    assert facts["precision"] == precision and facts["precision_reason"] == choice.reason
    metrics = read_json(run_dir / "metrics.json")
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(math.isfinite(m["train/loss"]) and math.isfinite(m["val/loss"]) for m in metrics)
