"""Runtime settings of a modelyard server or CLI session.

One plain object built by the CLI (flags and environment) or by tests, and
passed to ``create_app``; nothing reads the environment behind its back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
MIB = 1024**2
#: Timing settings that may also come from ``MODELYARD_<NAME>`` (seconds).
_FLOAT_ENV = ("heartbeat_timeout_s", "worker_start_grace_s", "stop_timeout_s", "short_job_timeout_s",
              "predict_batch_wait_ms")
#: Counts that may also come from ``MODELYARD_<NAME>``.
_INT_ENV = ("cpu_job_slots", "warm_workers", "predict_max_models", "predict_cache_mb", "predict_max_batch",
            "predict_max_files")


@dataclass
class Settings:
    workspace: Path = field(default_factory=lambda: Path("workspace"))
    host: str = "127.0.0.1"
    port: int = 8000
    import_roots: list[Path] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)
    log_level: str = "info"
    # Request bodies: uploads may be huge, everything else stays small.
    max_upload_bytes: int = 10 * GIB
    max_request_bytes: int = 10 * MIB
    # ZIP extraction limits, counted while extracting (not trusted from headers).
    zip_max_entries: int = 200_000
    zip_max_uncompressed_bytes: int = 50 * GIB
    # Pillow's decompression-bomb threshold for imported images.
    max_image_pixels: int = 178_956_970
    api_token: str | None = None
    # Prediction (core/prediction): the loaded-model cache, dynamic batching and request limits.
    predict_max_models: int = 4
    predict_cache_mb: int = 4096
    predict_max_batch: int = 16  # images in one forward pass, merged from concurrent requests
    predict_batch_wait_ms: float = 2.0  # how long a request waits for others to join its batch
    predict_max_files: int = 64  # images per predict request
    predict_max_request_bytes: int = 64 * MIB  # a predict request's whole body
    # Jobs (server side): worker supervision, the device queue and the SSE stream.
    # A training worker with no progress this long is killed and its run interrupted. Progress (the heartbeat)
    # comes from steps, so this must exceed the slowest single step or DDP start-up; a dead process is noticed
    # at once by its pid anyway.
    heartbeat_timeout_s: float = 300.0
    short_job_timeout_s: float = 300.0  # the same for evaluations and exports (whose progress comes in bigger steps)
    cpu_job_slots: int = 2  # evaluations/exports on the CPU at once (CPU training runs one at a time)
    # Pre-started workers that have imported torch and wait for the next job (0: every job starts cold).
    # `modelyard serve` keeps one by default (--warm-workers); an app built by a test or embedded elsewhere none.
    warm_workers: int = 0
    worker_start_grace_s: float = 120.0  # time a fresh worker gets (imports, data) before its first heartbeat
    stop_timeout_s: float = 60.0  # after a stop request, kill the worker group when it has not exited
    scheduler_interval_s: float = 1.0
    sse_poll_s: float = 0.25
    max_wait_s: float = 600.0  # the longest a job's GET ?wait= holds a request (and a worker thread)
    sse_keepalive_s: float = 15.0
    # Where jobs run (core/jobs/executors.py, docs/cluster.md): `local` worker processes, or `ray` (Ray Jobs on the
    # cluster whose job endpoint, the head's dashboard address, is `ray_address`; token from `ray_token_file`).
    executor: str = "local"
    ray_address: str | None = None
    ray_token_file: Path | None = None
    #: the interpreter a cluster node runs workers with (default: this server's, the same path on every node)
    ray_python: str | None = None

    def __post_init__(self) -> None:
        self.workspace = Path(self.workspace).expanduser().resolve()
        self.import_roots = [Path(p).expanduser().resolve() for p in self.import_roots]
        if self.ray_token_file is not None:
            self.ray_token_file = Path(self.ray_token_file).expanduser().resolve()

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``MODELYARD_*`` variables, then explicit overrides (CLI flags win)."""
        values: dict[str, object] = {}
        if env_ws := os.environ.get("MODELYARD_WORKSPACE"):
            values["workspace"] = Path(env_ws)
        if env_roots := os.environ.get("MODELYARD_IMPORT_ROOTS"):
            values["import_roots"] = [Path(p) for p in env_roots.split(os.pathsep) if p]
        if env_hosts := os.environ.get("MODELYARD_ALLOWED_HOSTS"):
            values["allowed_hosts"] = [h.strip() for h in env_hosts.split(",") if h.strip()]
        if env_token := os.environ.get("MODELYARD_API_TOKEN"):
            values["api_token"] = env_token
        for name in ("executor", "ray_address", "ray_python"):
            if env_value := os.environ.get("MODELYARD_" + name.upper()):
                values[name] = env_value
        if env_token_file := os.environ.get("MODELYARD_RAY_TOKEN_FILE"):
            values["ray_token_file"] = Path(env_token_file)
        for name in _FLOAT_ENV:
            if env_value := os.environ.get("MODELYARD_" + name.upper()):
                values[name] = float(env_value)
        for name in _INT_ENV:
            if env_value := os.environ.get("MODELYARD_" + name.upper()):
                values[name] = int(env_value)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
