"""GPU-only training measurements (reported on a CUDA machine, listed as skipped elsewhere).

``bench_optimised_vs_fp32``: training images/s of the same network with bf16
autocast + ``channels_last`` (+ ``torch.compile`` where asked) against eager
fp32, same data already on the device, same optimizer and batch, interleaved.
The function takes the device so its code path also runs (tiny, without
compile) on the CPU in the test suite.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.harness import Result, Side, interleave

GPU_ROWS: dict[str, str] = {
    "train_gpu_resnet18_224_optimised": ("plain loop resnet18 224px: bf16 autocast + channels_last (+ torch.compile) "
                                         "vs eager fp32, training images/s"),
    "train_gpu_engine_vs_plain_optimised": "run engine vs plain loop with the same GPU optimisations, training images/s",
}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, optimised: bool,
             device: torch.device) -> Callable[[], None]:
    """One optimizer step over ``images`` per call, fp32 or bf16-autocast + channels_last."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = images.contiguous(memory_format=torch.channels_last) if optimised else images

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=optimised):
            loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _rate(step: Callable[[], None], steps: int, batch: int, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def bench_optimised_vs_fp32(device: torch.device, arch: str = "resnet18", image_px: int = 224, batch: int = 64,
                            steps: int = 20, repeats: int = 5, compile_model: bool = True, num_classes: int = 10) -> Result:
    """Images/s of bf16 + channels_last (+ compile) against eager fp32 for one architecture on ``device``."""
    from modelyard.core.models import build_model
    from modelyard.core.plugin_manager import default_plugin_host

    registry = default_plugin_host().architectures

    def model(optimised: bool) -> Any:
        torch.manual_seed(0)
        net = build_model(registry, arch, num_classes, image_size=(image_px, image_px)).to(device)
        if optimised:
            net = net.to(memory_format=torch.channels_last)
            if compile_model:
                net = torch.compile(net)
        return net

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, image_px, image_px, generator=generator).to(device)
    labels = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    fp32 = _trainer(model(False), images, labels, False, device)
    optimised = _trainer(model(True), images, labels, True, device)
    for step in (fp32, optimised):  # warm-up: cuDNN autotuning, and compilation for the optimised side
        step()
        step()
    opt_values, fp32_values = interleave(lambda: _rate(optimised, steps, batch, device),
                                         lambda: _rate(fp32, steps, batch, device), repeats)
    label = "bf16 + channels_last" + (" + torch.compile" if compile_model else "")
    return Result(
        id="train_gpu_resnet18_224_optimised",
        compares=f"plain training loop {arch} {image_px}px batch {batch} on {device}: {label} vs eager fp32, images/s",
        ours=Side(label, "img/s", opt_values), against=Side("eager fp32", "img/s", fp32_values),
        ratio_kind="ours/against", target="informational", target_value=1.0, higher_is_better=True,
        extra={"device": str(device), "steps_per_repeat": steps, "compiled": compile_model},
    )
