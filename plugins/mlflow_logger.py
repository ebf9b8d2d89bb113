"""Experiment logger ``mlflow``: params, per-epoch metrics and artifacts of a run in MLflow (``pip install 'modelyard[mlflow]'``).

Selected with ``logging: {mlflow: {tracking_uri: ..., experiment_name: ...}}``.
What MLflow's UI then shows for the run (named after the modelyard run id):

- **params**: the run's experiment config, flattened (``training.optimizer.lr``);
- **metrics**: every value of each epoch's ``metrics.json`` record
  (``train/loss``, ``val/loss``, ``val/acc``, ..., ``lr``, ``time_s``) at step = epoch;
- **artifacts**: ``config.yaml`` and ``metrics.json`` of the run folder, and with
  ``log_checkpoint: true`` the file ``checkpoints/best.ckpt``; the tag
  ``modelyard.best_checkpoint`` always holds best.ckpt's absolute path;
- **tags**: ``modelyard.run_id``, ``modelyard.project_id``, ``modelyard.experiment_id``,
  ``modelyard.task`` and the config's ``tags``; the status ends ``FINISHED``,
  ``FAILED`` or ``KILLED`` (a stopped run).

The MLflow run id is kept in the run folder's ``mlflow.json``, so a resumed
run continues the same MLflow run. A ``file:`` store must lie inside the
workspace or an import root when the experiment is saved through the API.
MLflow's usage telemetry is switched off unless ``MLFLOW_DISABLE_TELEMETRY``
says otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from modelyard.core import CallbackRegistry, LoggerPlugin, TrainingContext, ValidationError, atomic_write_bytes, hookimpl

INSTALL_HINT = "pip install 'modelyard[mlflow]'"
#: the run folder's record of the MLflow run (tracking URI, experiment and run ids)
RUN_RECORD = "mlflow.json"
SCHEMES = ("file", "http", "https")
_STATUS = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED", "killed": "KILLED"}

OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "tracking_uri": {
            "type": ["string", "null"], "default": None,
            "description": "file:/abs/path, http(s)://host:port; null: MLFLOW_TRACKING_URI, else <workspace>/mlruns",
        },
        "experiment_name": {"type": ["string", "null"], "default": None,
                            "description": "MLflow experiment (created if missing); null: the project's name"},
        "run_name": {"type": ["string", "null"], "default": None, "description": "null: the modelyard run id"},
        "tags": {"type": "object", "default": {}, "additionalProperties": {"type": "string"},
                 "description": "extra tags of the MLflow run"},
        "log_checkpoint": {"type": "boolean", "default": False,
                           "description": "upload checkpoints/best.ckpt as an artifact when the run ends"},
    },
}


def store_path(uri: str) -> Path | None:
    """The folder of a ``file:`` tracking URI (``None`` for another scheme); ``ValidationError`` if malformed."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise ValidationError(f"a file: tracking URI names a local folder, not host '{parsed.netloc}'", field="tracking_uri")
    path = Path(unquote(parsed.path))
    if not path.is_absolute():
        raise ValidationError("a file: tracking URI needs an absolute path (file:/abs/path/mlruns)", field="tracking_uri")
    return path


def validate_options(options: dict[str, Any], roots: list[Path] | None = None) -> None:
    """The tracking URI's scheme and, for a ``file:`` store, its folder; a non-empty experiment name."""
    uri = options.get("tracking_uri")
    if uri is not None:
        scheme = urlparse(uri).scheme
        if scheme not in SCHEMES:
            raise ValidationError(
                f"tracking_uri must start with {', '.join(s + ':' for s in SCHEMES)} (got {uri!r})", field="tracking_uri"
            )
        path = store_path(uri)
        if path is not None and roots is not None:
            resolved = path.resolve()
            if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
                raise ValidationError(
                    "a file: tracking URI must name a folder inside the workspace or an allowed import root",
                    field="tracking_uri", details={"path": str(path)},
                )
    for key in ("experiment_name", "run_name"):
        value = options.get(key)
        if value is not None and not (0 < len(value.strip()) <= 250):
            raise ValidationError(f"{key} must be 1 to 250 characters", field=key)


def _tracking_uri(options: dict[str, Any], context: TrainingContext) -> str:
    uri = options.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or (Path(context.workspace) / "mlruns").resolve().as_uri()


def build_mlflow_logger(options: dict[str, Any], context: TrainingContext) -> Any:
    """An ``MLFlowLogger`` that also logs the run's files and best checkpoint when it is finalised."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported: no usage reports
    uri = _tracking_uri(options, context)
    if urlparse(uri).scheme == "file":
        # MLflow 3 keeps its file store only behind this opt-in; a file: URI in the config is that opt-in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from lightning.pytorch.loggers import MLFlowLogger

    run_dir = Path(context.run_dir)

    class RunMLFlowLogger(MLFlowLogger):  # type: ignore[misc]
        """Remembers its MLflow run in ``mlflow.json``, reopens it on resume, logs artifacts when finalised."""

        def __init__(self, resumed_run_id: str | None) -> None:
            tags = {"modelyard.run_id": context.run_id, "modelyard.project_id": context.project_id,
                    "modelyard.experiment_id": context.experiment_id, "modelyard.task": context.task,
                    **dict(options.get("tags") or {})}
            super().__init__(
                experiment_name=options.get("experiment_name") or context.project_name or "modelyard",
                run_name=options.get("run_name") or context.run_id,
                tracking_uri=uri,
                tags=tags,
                run_id=resumed_run_id,
            )
            self._resumed = resumed_run_id is not None

        @property
        def experiment(self) -> Any:
            first = not self._initialized
            client = super().experiment
            if first:
                if self._resumed:
                    client.update_run(self.run_id, status="RUNNING")
                record = {"tracking_uri": uri, "experiment_id": self._experiment_id, "run_id": self.run_id}
                atomic_write_bytes(run_dir / RUN_RECORD, json.dumps(record, indent=2).encode("utf-8"))
            return client

        def log_hyperparams(self, params: Any) -> None:
            if self._resumed:  # MLflow refuses to change a logged param: a resume keeps the first values
                logged = self.experiment.get_run(self.run_id).data.params
                params = {key: value for key, value in dict(params).items() if key not in logged}
                if not params:
                    return
            super().log_hyperparams(params)

        def finalize(self, status: str = "success") -> None:
            if not self._initialized:
                return
            client = self.experiment
            for name in ("config.yaml", "metrics.json"):
                if (run_dir / name).is_file():
                    client.log_artifact(self.run_id, str(run_dir / name))
            best = run_dir / "checkpoints" / "best.ckpt"
            if best.is_file():
                client.set_tag(self.run_id, "modelyard.best_checkpoint", str(best))
                if options.get("log_checkpoint"):
                    client.log_artifact(self.run_id, str(best), artifact_path="checkpoints")
            super().finalize(_STATUS.get(status, status.upper()))

    return RunMLFlowLogger(_resumed_run(run_dir, uri))


def _resumed_run(run_dir: Path, uri: str) -> str | None:
    """The MLflow run this modelyard run logged to before (a resume), if it used the same store."""
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(record, dict) and record.get("tracking_uri") == uri and isinstance(record.get("run_id"), str):
        return str(record["run_id"])
    return None


MLFLOW = LoggerPlugin(
    name="mlflow",
    build=build_mlflow_logger,
    options_schema=OPTIONS_SCHEMA,
    description="MLflow tracking: flattened config as params, per-epoch metrics, config.yaml and metrics.json as artifacts.",
    requires=("mlflow",),
    install_hint=INSTALL_HINT,
    validate=validate_options,
)


@hookimpl
def register_callbacks(registry: CallbackRegistry) -> None:
    registry.add(MLFLOW)
