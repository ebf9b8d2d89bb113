"""A stand-in for ``pynvml`` (NVML is a driver library: the one boundary we mock for devices)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

MIB = 1024 * 1024


@dataclass
class FakeMemory:
    total: int
    free: int
    used: int = 0


@dataclass
class FakeUtilization:
    gpu: int
    memory: int = 0


class FakeNvml(types.ModuleType):
    """The few ``pynvml`` calls we use, answering for a list of (name, total, free) GPUs.

    ``utilization`` gives each GPU's busy percentage; a GPU without one raises NVML's not-supported error.
    """

    def __init__(self, gpus: list[tuple[object, int, int]], fail_on: str | None = None,
                 utilization: list[int | None] | None = None) -> None:
        super().__init__("pynvml")
        self.gpus = gpus
        self.utilization = utilization or [None] * len(gpus)
        self.fail_on = fail_on
        self.shutdowns = 0

    def _maybe_fail(self, call: str) -> None:
        if self.fail_on == call:
            raise RuntimeError(f"NVML_ERROR in {call}")

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self._maybe_fail("init")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._maybe_fail("count")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> object:  # noqa: N802
        return self.gpus[handle][0]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> FakeMemory:  # noqa: N802
        self._maybe_fail("memory")
        _, total, free = self.gpus[handle]
        return FakeMemory(total=total, free=free)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> FakeUtilization:  # noqa: N802
        percent = self.utilization[handle]
        if percent is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return FakeUtilization(gpu=percent)


def install_fake_nvml(monkeypatch: pytest.MonkeyPatch, fake: object) -> None:
    """Make ``import pynvml`` return ``fake`` (``None`` makes it raise ImportError) for one test."""
    monkeypatch.setitem(sys.modules, "pynvml", fake)

