"""Prediction as the API and the CLI ask for it: load models into the cache, answer for images.

A request's images are decoded one by one (an unusable image gets an
``error`` in its place, the others are answered), then go through the
model's batcher together. Nothing is written to disk.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..datasets.validate import InvalidImage
from ..errors import ConflictError, ModelyardError, PayloadTooLargeError, ValidationError
from ..ids import new_id
from ..timeutil import utc_now_iso
from .batcher import DynamicBatcher
from .cache import LoadedModel, ModelCache
from .images import INVALID_IMAGE, DecodedImage, decode_upload
from .predictors import CheckpointPredictor, ExportPredictor, Predictor, load_export_runner, stack_pixels

if TYPE_CHECKING:
    import torch

    from ..datasets.service import DatasetService
    from ..export.service import ExportService
    from ..plugin_manager import PluginHost
    from ..settings import Settings
    from ..workspace import Workspace

MAX_TOP_K = 1000
EXPLAIN_METHODS = ("gradcam",)


@dataclass(frozen=True)
class PredictOptions:
    """A request's knobs: ``top_k`` (classification), ``score_threshold`` (detection); ``None``: the task's default."""

    top_k: int | None = None
    score_threshold: float | None = None
    #: ``gradcam``: a heat map of the top class per image (classification, checkpoint models only)
    explain: str | None = None

    def __post_init__(self) -> None:
        if self.explain is not None and self.explain not in EXPLAIN_METHODS:
            raise ValidationError(f"explain must be one of: {', '.join(EXPLAIN_METHODS)}", field="explain")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not 1 <= self.top_k <= MAX_TOP_K):
            raise ValidationError(f"top_k must be an integer between 1 and {MAX_TOP_K}", field="top_k")
        if self.score_threshold is not None and not (math.isfinite(self.score_threshold)
                                                     and 0.0 <= self.score_threshold <= 1.0):
            raise ValidationError("score_threshold must be between 0 and 1", field="score_threshold")

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in (("top_k", self.top_k), ("score_threshold", self.score_threshold))
                if value is not None}


class PredictionService:
    """The server's (or a CLI session's) loaded models and the predict calls on them."""

    def __init__(self, workspace: Workspace, plugins: PluginHost, settings: Settings, datasets: DatasetService,
                 exports: ExportService) -> None:
        self.workspace = workspace
        self.plugins = plugins
        self.settings = settings
        self.datasets = datasets
        self.exports = exports
        self.cache = ModelCache(settings.predict_max_models, settings.predict_cache_mb * 1024 * 1024)

    # -- models ------------------------------------------------------------------------------
    def load(self, project_id: str, *, run_id: str | None = None, checkpoint: str = "best",
             export_id: str | None = None, device: str | None = None) -> dict[str, Any]:
        """Load a run's checkpoint or an export into the cache; the new model's listing entry."""
        self.workspace.existing_project_dir(project_id)
        if (run_id is None) == (export_id is None):
            raise ValidationError("give either run_id (with checkpoint) or export_id", field="run_id")
        device = self._device(device)
        started = time.perf_counter()
        try:
            if run_id is not None:
                predictor, source = self._checkpoint(project_id, run_id, checkpoint, device)
            else:
                assert export_id is not None
                predictor, source = self._export(project_id, export_id, device)
        except ModelyardError:
            raise
        except Exception as exc:  # a file the runtime cannot use: the reason, never a 500 or a dead server
            raise ConflictError(f"the model cannot be loaded: {type(exc).__name__}: {exc}",
                                {"run_id": run_id, "export_id": export_id}) from None
        model_id = new_id("model")
        batcher = DynamicBatcher(predictor.outputs, self.settings.predict_max_batch,
                                 self.settings.predict_batch_wait_ms / 1000.0, name=model_id)
        model = LoadedModel(id=model_id, project_id=project_id, source={**source, "device": device},
                            predictor=predictor, batcher=batcher, loaded_at=utc_now_iso(),
                            load_seconds=time.perf_counter() - started)
        self.cache.add(model)
        return model.info(self.cache.is_default(model))

    def list(self, project_id: str) -> list[dict[str, Any]]:
        self.workspace.existing_project_dir(project_id)
        return [m.info(self.cache.is_default(m)) for m in self.cache.list(project_id)]

    def get(self, project_id: str, model_id: str) -> dict[str, Any]:
        self.workspace.existing_project_dir(project_id)
        model = self.cache.get(project_id, model_id)
        return model.info(self.cache.is_default(model))

    def unload(self, project_id: str, model_id: str) -> None:
        self.workspace.existing_project_dir(project_id)
        self.cache.remove(project_id, model_id)

    def set_default(self, project_id: str, model_id: str) -> dict[str, Any]:
        self.workspace.existing_project_dir(project_id)
        return self.cache.set_default(project_id, model_id).info(True)

    def close(self) -> None:
        self.cache.close()

    # -- predict -----------------------------------------------------------------------------
    def predict(self, project_id: str, model_id: str | None, files: Sequence[tuple[str, bytes]],
                options: PredictOptions) -> dict[str, Any]:
        """Answers for uploaded images (``(filename, bytes)``), in order; see DESIGN section 12."""
        self.workspace.existing_project_dir(project_id)
        model = self._model(project_id, model_id)
        self._check_request_size(files)
        predictor = model.predictor
        if options.explain is not None:
            self._check_explainable(predictor, options.explain)
        decoded: list[DecodedImage | dict[str, Any]] = []
        for filename, data in files:
            try:
                decoded.append(decode_upload(filename, data, predictor.input_size, predictor.channels,
                                             self.settings.max_image_pixels))
            except InvalidImage as exc:
                decoded.append({"filename": filename, "error": {"code": INVALID_IMAGE, "message": exc.reason}})
        usable = [item for item in decoded if isinstance(item, DecodedImage)]
        batch = stack_pixels(predictor, usable) if usable else None
        outputs = model.batcher(batch) if batch is not None else []
        model.requests += 1
        answers = iter(zip(usable, outputs, strict=True))
        results: list[dict[str, Any]] = []
        for item in decoded:
            if isinstance(item, DecodedImage):
                image, output = next(answers)
                results.append({"filename": image.filename, "width": image.width, "height": image.height,
                                "predictions": predictor.predictions(output, image, options.as_dict())})
            else:
                results.append(item)
        if options.explain is not None and batch is not None:
            assert isinstance(predictor, CheckpointPredictor)
            self._add_explanations(predictor, batch, [r for r in results if "predictions" in r])
        return {"model_id": model.id, "task": predictor.task, "results": results}

    def predict_dataset(self, project_id: str, model_id: str | None, filenames: Sequence[str],
                        options: PredictOptions) -> dict[str, Any]:
        """The same for images already in the project's dataset (by name; an unknown name is 404)."""
        self.workspace.existing_project_dir(project_id)
        self._model(project_id, model_id)  # 404/409 before reading any file
        self._check_request_size([(name, b"") for name in filenames])
        files = []
        for name in filenames:
            path, _ = self.datasets.image(project_id, name)
            files.append((name, path.read_bytes()))
        return self.predict(project_id, model_id, files, options)

    @staticmethod
    def _check_explainable(predictor: Predictor, method: str) -> None:
        """Refuse ``explain`` (422 naming it) for a model that cannot give one, before anything runs."""
        if not isinstance(predictor, CheckpointPredictor):
            raise ValidationError(
                f"explain={method} needs gradients, which this model's runtime ({predictor.runtime_name}) "
                "cannot give: an export runs the forward pass only; load the run's checkpoint "
                "({\"run_id\", \"checkpoint\"}) and ask that model",
                field="explain", details={"runtime": predictor.runtime_name})
        if not predictor.runtime.explainable:
            raise ValidationError(f"explain={method} explains class scores, which task '{predictor.task}' "
                                  "does not give", field="explain", details={"task": predictor.task})

    @staticmethod
    def _add_explanations(predictor: CheckpointPredictor, batch: torch.Tensor,
                          answered: Sequence[dict[str, Any]]) -> None:
        """Add a Grad-CAM ``explanation`` of its top class to each answered result (the batch that was predicted).

        Outside the batcher (gradients), under the model's lock, so no plain
        prediction runs while Captum's hook is on the network.
        """
        import base64

        from .explain import GRADCAM, gradcam

        class_ids = [int(result["predictions"][0]["class_id"]) for result in answered]
        with predictor.lock:
            heat = gradcam(predictor, batch, class_ids)
        height, width = predictor.input_size
        for index, (result, class_id) in enumerate(zip(answered, class_ids, strict=True)):
            result["explanation"] = {
                "method": GRADCAM, "class_id": class_id, "class_name": predictor.classes[class_id],
                "layer": heat.layer, "media_type": "image/png", "width": width, "height": height,
                "png_base64": base64.b64encode(heat.png(index)).decode("ascii"),
            }

    def _model(self, project_id: str, model_id: str | None) -> LoadedModel:
        """The named model, or the project's default when no id is given."""
        return self.cache.default(project_id) if model_id is None else self.cache.get(project_id, model_id)

    def _check_request_size(self, files: Sequence[tuple[str, bytes]]) -> None:
        if not files:
            raise ValidationError("send at least one image (multipart field 'files')", field="files")
        if len(files) > self.settings.predict_max_files:
            raise PayloadTooLargeError(f"at most {self.settings.predict_max_files} images per request",
                                       {"files": len(files), "limit": self.settings.predict_max_files})

    # -- loading -----------------------------------------------------------------------------
    def _device(self, device: str | None) -> str:
        """A device id of ``/api/system/devices``: the one asked for, else the first GPU, else ``cpu``."""
        from ..devices import known_device_ids

        known = known_device_ids()
        if device is None:
            gpus = sorted(d for d in known if d != "cpu")
            return gpus[0] if gpus else "cpu"
        if device not in known:
            raise ValidationError(f"unknown device '{device}'", field="device", details={"available": sorted(known)})
        return device

    def _checkpoint(self, project_id: str, run_id: str, checkpoint: str, device: str) -> tuple[Predictor, dict[str, Any]]:
        from ..evaluation.worker import torch_device
        from ..training.checkpoints import load_trained_model
        from ..training.task_runtime import runtime_of

        trained = load_trained_model(self.workspace, project_id, run_id, checkpoint, plugins=self.plugins,
                                     device=torch_device([device]))
        runtime = runtime_of(self.plugins.tasks.get(trained.task, field="task"))
        source = {"kind": "checkpoint", "run_id": run_id, "experiment_id": trained.ref.experiment_id,
                  "checkpoint": checkpoint}
        return CheckpointPredictor(trained, runtime, device), source

    def _export(self, project_id: str, export_id: str, device: str) -> tuple[Predictor, dict[str, Any]]:
        from ..evaluation.worker import torch_device
        from ..training.task_runtime import runtime_of

        record = self.exports.get(project_id, export_id)
        folder = self.exports.jobs.folder(project_id, export_id)
        if record.status != "completed" or record.file is None or record.metadata is None:
            raise ConflictError(f"Export {export_id} is {record.status}; only a completed export can be loaded",
                                {"export_id": export_id, "status": record.status})
        path = folder / record.file.name
        if not path.is_file():
            raise ConflictError(f"The file of export {export_id} is missing", {"export_id": export_id})
        exporter = self.plugins.exporters.get(record.format, field="format")
        runtime = runtime_of(self.plugins.tasks.get(record.metadata.task, field="task"))
        run = load_export_runner(exporter, path, dict(record.options), torch_device([device]))
        from ..export.service import static_batch

        batch = static_batch(record.options)
        if batch is None and runtime.export_input_axes() == {}:
            batch = 1  # the task's graph takes one image (detection)
        runtime_name = "onnxruntime" if record.format == "onnx" else record.format
        source = {"kind": "export", "export_id": export_id, "format": record.format, "run_id": record.run_id,
                  "experiment_id": record.experiment_id, "checkpoint": record.checkpoint}
        return ExportPredictor(path, record.metadata, runtime, run, runtime_name, device, batch), source
