"""``/api/system``: reference section 7 (health, devices, workspace)."""

from __future__ import annotations

import msgspec
from litestar import Controller, get

import modelyard
from modelyard.core.devices import list_devices
from modelyard.core.system import workspace_stats

from .deps import ServicesDep
from .envelope import Ok, ok


class Health(msgspec.Struct):
    status: str
    version: str
    uptime_s: float


class Device(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    type: str
    index: int | None = None
    memory_total_mb: int | None = None
    memory_free_mb: int | None = None
    #: GPUs: percent of NVML's last sample period a kernel ran (absent where the GPU does not report it)
    utilization_percent: int | None = None


class Devices(msgspec.Struct):
    devices: list[Device]
    cuda_available: bool
    cuda_version: str | None
    default_selected: list[str]


class DiskUsage(msgspec.Struct):
    total_bytes: int
    used_bytes: int
    free_bytes: int


class ProjectUsage(msgspec.Struct):
    id: str
    bytes: int


class WorkspaceStats(msgspec.Struct):
    path: str
    disk: DiskUsage
    workspace_bytes: int
    project_count: int
    projects: list[ProjectUsage]


class SystemController(Controller):
    path = "/api/system"
    tags = ["System"]

    # security=[{}]: open even when MODELYARD_API_TOKEN is set (api/auth.py OPEN_PATHS).
    @get("/health", operation_id="GetHealth", summary="Health check", security=[{}])
    async def get_health(self, services: ServicesDep) -> Ok[Health]:
        return ok(Health(status="healthy", version=modelyard.__version__, uptime_s=services.uptime.seconds()))

    @get("/devices", operation_id="ListDevices", summary="List available devices (CPU + GPUs)", sync_to_thread=True)
    def list_devices(self) -> Ok[Devices]:
        return ok(msgspec.convert(list_devices(), Devices))

    @get("/workspace", operation_id="GetWorkspaceStats", summary="Workspace stats (disk usage)", sync_to_thread=True)
    def get_workspace(self, services: ServicesDep) -> Ok[WorkspaceStats]:
        return ok(msgspec.convert(workspace_stats(services.workspace), WorkspaceStats))
