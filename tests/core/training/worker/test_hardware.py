"""How a config's hardware section becomes a Lightning setup (core/training/worker/engine.py: hardware_plan)."""

from __future__ import annotations

import pytest
import torch

from modelyard.core.training.config import parse_config
from modelyard.core.training.worker.engine import _strategy, hardware_plan, resolve_precision


def plan_for(hardware: dict, precision: str = "auto"):
    return hardware_plan(parse_config({"hardware": hardware, "training": {"precision": precision}}))


def test_cpu_trains_in_one_process_at_full_precision_by_default() -> None:
    plan = plan_for({"devices": ["cpu"]})
    assert (plan.accelerator, plan.devices, plan.world_size, plan.ddp, plan.precision) == ("cpu", 1, 1, False, "32-true")
    assert _strategy(plan) == "auto"


def test_cpu_with_several_processes_uses_ddp_over_gloo() -> None:
    plan = plan_for({"devices": ["cpu"], "num_processes": 2})
    assert (plan.devices, plan.world_size, plan.ddp) == (2, 2, True)
    strategy = _strategy(plan)
    assert type(strategy).__name__ == "DDPStrategy" and strategy.process_group_backend == "gloo"


def test_several_gpus_use_ddp_over_exactly_those_devices() -> None:
    plan = plan_for({"devices": ["gpu:0", "gpu:2"]}, precision="bf16-mixed")
    assert (plan.accelerator, plan.devices, plan.world_size, plan.ddp) == ("gpu", [0, 2], 2, True)
    assert plan.precision == "bf16-mixed"
    assert _strategy(plan).process_group_backend == "nccl"


def test_one_gpu_trains_without_ddp_unless_asked() -> None:
    assert not plan_for({"devices": ["gpu:1"]}, precision="32").ddp
    assert plan_for({"devices": ["gpu:1"], "strategy": "ddp"}, precision="32").ddp


@pytest.mark.parametrize(("requested", "expected"), [("32", "32-true"), ("16-mixed", "16-mixed"), ("bf16-mixed", "bf16-mixed")])
def test_explicit_precisions_pass_through(requested: str, expected: str) -> None:
    assert resolve_precision(requested, "gpu") == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_precision_on_a_gpu_is_bf16_only_with_native_support() -> None:
    # not torch.cuda.is_bf16_supported(): it also says yes for emulated bf16 (compute < 8.0)
    expected = "bf16-mixed" if torch.cuda.get_device_capability(0) >= (8, 0) else "16-mixed"
    assert resolve_precision("auto", "gpu", [0]) == expected
