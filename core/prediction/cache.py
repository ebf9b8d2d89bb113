"""The server's loaded models: a bounded cache (count and memory) that evicts the least recently used.

Entries belong to a project; a project may name one of its models its
default (the first one loaded is, until another is chosen). An evicted or
unloaded model's batcher finishes the requests it holds and stops.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConflictError, ModelNotFoundError
from .batcher import DynamicBatcher
from .predictors import Predictor


@dataclass
class LoadedModel:
    id: str
    project_id: str
    source: dict[str, Any]
    predictor: Predictor
    batcher: DynamicBatcher
    loaded_at: str
    load_seconds: float
    requests: int = 0
    last_used: float = field(default_factory=time.monotonic)

    def info(self, is_default: bool) -> dict[str, Any]:
        """The listing's view of the model (``GET /api/predict/{project_id}/models``)."""
        predictor = self.predictor
        return {
            "id": self.id,
            "project_id": self.project_id,
            "source": dict(self.source),
            "task": predictor.task,
            "classes": list(predictor.classes),
            "input_size": list(predictor.input_size),
            "channels": predictor.channels,
            "runtime": predictor.runtime_name,
            "device": self.source.get("device", "cpu"),
            "memory_bytes": predictor.memory_bytes,
            "load_seconds": round(self.load_seconds, 4),
            "loaded_at": self.loaded_at,
            "requests": self.requests,
            "images": self.batcher.images_run,
            "batches": self.batcher.batches_run,
            "is_default": is_default,
        }


class ModelCache:
    """At most ``max_models`` models and ``max_bytes`` of them; thread-safe."""

    def __init__(self, max_models: int = 4, max_bytes: int = 4 * 1024**3) -> None:
        self.max_models = max(1, int(max_models))
        self.max_bytes = int(max_bytes)
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._defaults: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, model: LoadedModel) -> list[str]:
        """Hold ``model`` (the project's default when it has none); returns the ids evicted to make room."""
        size = model.predictor.memory_bytes
        if size > self.max_bytes:
            model.batcher.close()
            raise ConflictError(
                f"the model needs {size} bytes, more than the prediction cache's limit of {self.max_bytes} "
                "(modelyard serve --predict-cache-mb)",
                {"memory_bytes": size, "limit": self.max_bytes})
        evicted: list[LoadedModel] = []
        with self._lock:
            while self._models and (len(self._models) >= self.max_models
                                    or self._bytes() + size > self.max_bytes):
                _, oldest = self._models.popitem(last=False)
                self._forget_default(oldest)
                evicted.append(oldest)
            self._models[model.id] = model
            self._defaults.setdefault(model.project_id, model.id)
        for old in evicted:
            old.batcher.close()
        return [old.id for old in evicted]

    def get(self, project_id: str, model_id: str) -> LoadedModel:
        """The model, marked as just used; 404 when this project does not hold it."""
        with self._lock:
            model = self._models.get(model_id)
            if model is None or model.project_id != project_id:
                raise ModelNotFoundError(f"Model {model_id} is not loaded in project {project_id}",
                                         {"model_id": model_id, "project_id": project_id})
            self._models.move_to_end(model_id)
            model.last_used = time.monotonic()
            return model

    def default(self, project_id: str) -> LoadedModel:
        """The project's default model; 409 when it has none."""
        with self._lock:
            model_id = self._defaults.get(project_id)
        if model_id is None:
            raise ConflictError(f"Project {project_id} has no default model: load one with POST "
                                f"/api/predict/{project_id}/models, or choose one with PUT /api/predict/{project_id}/default",
                                {"project_id": project_id})
        return self.get(project_id, model_id)

    def set_default(self, project_id: str, model_id: str) -> LoadedModel:
        model = self.get(project_id, model_id)
        with self._lock:
            self._defaults[project_id] = model_id
        return model

    def is_default(self, model: LoadedModel) -> bool:
        with self._lock:
            return self._defaults.get(model.project_id) == model.id

    def list(self, project_id: str) -> list[LoadedModel]:
        """The project's models, most recently used first."""
        with self._lock:
            return [m for m in reversed(self._models.values()) if m.project_id == project_id]

    def remove(self, project_id: str, model_id: str) -> None:
        """Unload (404 when not held); requests it already took still get their answers."""
        model = self.get(project_id, model_id)
        with self._lock:
            self._models.pop(model_id, None)
            self._forget_default(model)
        model.batcher.close()

    def remove_project(self, project_id: str) -> None:
        """Unload every model of a project (it was deleted)."""
        for model in self.list(project_id):
            self.remove(project_id, model.id)

    def close(self) -> None:
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
            self._defaults.clear()
        for model in models:
            model.batcher.close()

    def _bytes(self) -> int:
        return sum(m.predictor.memory_bytes for m in self._models.values())

    def _forget_default(self, model: LoadedModel) -> None:
        if self._defaults.get(model.project_id) == model.id:
            del self._defaults[model.project_id]
