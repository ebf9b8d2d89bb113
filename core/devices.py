"""Training devices: the CPU plus every NVIDIA GPU NVML can see.

NVML is a true boundary (a driver library); when it or a GPU is missing we
report the CPU only, never an error.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _nvml_gpus() -> list[dict[str, Any]]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver / no library: a CPU-only machine
        log.debug("NVML unavailable: %s", exc)
        return []
    gpus = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            if isinstance(name, bytes):
                name = name.decode("utf-8", "replace")
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpu = {
                "id": f"gpu:{index}",
                "name": name,
                "type": "gpu",
                "index": index,
                "memory_total_mb": int(memory.total // (1024 * 1024)),
                "memory_free_mb": int(memory.free // (1024 * 1024)),
            }
            utilization = _utilization_percent(pynvml, handle)
            if utilization is not None:
                gpu["utilization_percent"] = utilization
            gpus.append(gpu)
    except Exception as exc:
        log.warning("NVML query failed: %s", exc)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception as exc:
            log.debug("nvmlShutdown failed: %s", exc)
    return gpus


def _utilization_percent(pynvml: Any, handle: Any) -> int | None:
    """The GPU's busy percentage over NVML's last sample period; ``None`` where the GPU does not report it."""
    try:
        return int(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception as exc:  # e.g. NVML_ERROR_NOT_SUPPORTED on some boards, or in a MIG slice
        log.debug("NVML utilisation unavailable: %s", exc)
        return None


def _torch_cuda() -> tuple[bool, str | None]:
    try:
        import torch
    except ImportError:
        return False, None
    return bool(torch.cuda.is_available()), torch.version.cuda


def list_devices() -> dict[str, Any]:
    """The ``/api/system/devices`` payload (reference section 7)."""
    gpus = _nvml_gpus()
    cuda_available, cuda_version = _torch_cuda()
    devices = [{"id": "cpu", "name": "CPU", "type": "cpu"}, *gpus]
    return {
        "devices": devices,
        "cuda_available": cuda_available,
        "cuda_version": cuda_version,
        "default_selected": ["gpu:0"] if gpus else ["cpu"],
    }


def known_device_ids() -> set[str]:
    return {d["id"] for d in list_devices()["devices"]}
