"""Predict with an exported model in Python: no server, no workspace.

    from modelyard.predict import load

    model = load("model-bundle.zip")      # the bundle ZIP, its unzipped folder, or a bare model.onnx
    model.task, model.classes, model.input_size
    for item in model.predict(["cat.jpg", "dog.png"], top_k=3):
        print(item["filename"], item.get("predictions") or item["error"])

The bundle is what ``GET /api/export/{project_id}/{export_id}/download?bundle=zip``
sends (``core/export/bundle.py``): the model file, ``labels.json`` and
``preprocessing.json``. A bare ``.onnx`` file carries the same facts in its
``modelyard.*`` metadata.

Every answer is the REST API's result item (DESIGN section 12):
``{"filename", "width", "height", "predictions": [...]}``, or ``{"filename",
"error": {"code", "message"}}`` for an image that cannot be used. It is
computed by the server's own pieces, never re-implemented here: uploads are
validated and preprocessed by ``decode_upload`` (the import's checks and
training's ``image_tensor``), and the model runs as the server runs an export
(``ExportPredictor``: the exporter plugin's ``load_runner``, then the task
runtime's ``exported_outputs``, ``prediction_outputs`` and ``predictions``).
So the answers equal the server's for the same file and the same images.

A ZIP is read in memory and checked member by member (no unsafe names, sizes
within limits); an exporter's runner opens a file, so the model alone goes
to a private temporary folder that is removed as soon as it is loaded.
Anything wrong with the bundle raises ``BundleError`` (a ``ValueError``).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from PIL import Image

    from modelyard.core.plugin_manager import PluginHost
    from modelyard.core.prediction.predictors import ExportPredictor
    from modelyard.core.records import DeploymentMetadata

__all__ = ["BundleError", "BundleModel", "load"]

LABELS_FILE = "labels.json"
PREPROCESSING_FILE = "preprocessing.json"
#: A bundle holds four files; anything much larger is not one.
MAX_MEMBERS = 64
MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_MODEL_BYTES = 4 * 1024**3
#: Images decoded and run at once by ``predict`` (bounds its memory for long lists).
PREDICT_CHUNK = 64

#: One image for ``BundleModel.predict``: a file path, the file's bytes, or a PIL image.
ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, "Image.Image"]


class BundleError(ValueError):
    """The bundle (or model file) cannot be used; the message says which file and why."""


@dataclass
class _Parts:
    """What a bundle holds: the model (on disk, or bytes from a ZIP) and its JSON documents."""

    source: Path
    model_name: str
    model_path: Path | None = None
    model_bytes: bytes | None = None
    labels: Any = None
    preprocessing: Any = None


class BundleModel:
    """An exported model ready to answer about images; ``load`` builds it."""

    def __init__(self, predictor: ExportPredictor, metadata: DeploymentMetadata, source: Path, format_id: str,
                 max_pixels: int) -> None:
        self._predictor = predictor
        self.metadata = metadata
        #: the bundle ZIP, folder or model file it was loaded from
        self.path = source
        #: the export format's id (``onnx``, ``torchscript``, ...)
        self.format = format_id
        #: Pillow's decompression-bomb limit for the images it is given (the import's)
        self.max_pixels = max_pixels

    @property
    def task(self) -> str:
        return self._predictor.task

    @property
    def classes(self) -> list[str]:
        return list(self._predictor.classes)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` every image is resized to."""
        return self._predictor.input_size

    @property
    def channels(self) -> int:
        return self._predictor.channels

    @property
    def runtime(self) -> str:
        """What runs the file (``onnxruntime``, ``torchscript``, ...)."""
        return self._predictor.runtime_name

    @property
    def device(self) -> str:
        return self._predictor.device

    @property
    def facts(self) -> dict[str, Any]:
        """The task's own export facts (detection: the ``score_threshold`` the file was exported with)."""
        return dict(self.metadata.export)

    def __repr__(self) -> str:
        return (f"BundleModel({self.task}, {len(self.classes)} classes, input {list(self.input_size)}, "
                f"{self.runtime} on {self.device}, from {str(self.path)!r})")

    def predict(self, images: ImageInput | Sequence[ImageInput], *, top_k: int | None = None,
                score_threshold: float | None = None) -> list[dict[str, Any]]:
        """The API's answer item for each image, in order (an unusable image gets an ``error`` item).

        ``images`` is one image or a list of them: paths, the bytes of image
        files, or PIL images (taken as the pixels they hold: pass the file for
        exactly the server's answer, which reads EXIF orientation and decodes
        large JPEGs in draft mode). ``top_k`` (classification, default 5) and
        ``score_threshold`` (detection, default 0.5) are the API's form fields;
        a bad value raises ``modelyard.core.errors.ValidationError``. A path
        that cannot be read raises ``OSError``.
        """
        from modelyard.core.prediction.service import PredictOptions

        options = PredictOptions(top_k=top_k, score_threshold=score_threshold).as_dict()
        items = _image_list(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), PREDICT_CHUNK):
            uploads = [_as_upload(image, start + offset) for offset, image in enumerate(items[start:start + PREDICT_CHUNK])]
            results.extend(self._answer(uploads, options))
        return results

    def _answer(self, uploads: list[tuple[str, bytes]], options: dict[str, Any]) -> list[dict[str, Any]]:
        """``PredictionService.predict`` for one chunk, on this model alone."""
        from modelyard.core.datasets.validate import InvalidImage
        from modelyard.core.prediction.images import INVALID_IMAGE, DecodedImage, decode_upload
        from modelyard.core.prediction.predictors import stack_pixels

        predictor = self._predictor
        decoded: list[DecodedImage | dict[str, Any]] = []
        for filename, data in uploads:
            try:
                decoded.append(decode_upload(filename, data, predictor.input_size, predictor.channels, self.max_pixels))
            except InvalidImage as exc:
                decoded.append({"filename": filename, "error": {"code": INVALID_IMAGE, "message": exc.reason}})
        usable = [item for item in decoded if isinstance(item, DecodedImage)]
        outputs = iter(predictor.outputs(stack_pixels(predictor, usable)) if usable else [])
        results = []
        for item in decoded:
            if isinstance(item, DecodedImage):
                results.append({"filename": item.filename, "width": item.width, "height": item.height,
                                "predictions": predictor.predictions(next(outputs), item, options)})
            else:
                results.append(item)
        return results


def load(path: str | os.PathLike[str], device: str = "cpu", *, plugins: PluginHost | None = None) -> BundleModel:
    """Load a bundle ZIP, a folder holding its files, or a bare ``.onnx`` file; ``BundleError`` says what is wrong.

    ``device`` is ``cpu``, ``cuda:N`` or ``gpu:N`` (the API's device ids); a
    format whose runner has no device runs on the CPU only. ``plugins`` is
    the plugin host whose exporters and tasks to use (default: the installed
    ones, as the server loads them).
    """
    from modelyard.core.evaluation.worker import torch_device
    from modelyard.core.plugin_manager import default_plugin_host
    from modelyard.core.plugin_types import METADATA_PREFIX
    from modelyard.core.prediction.predictors import ExportPredictor, load_export_runner
    from modelyard.core.settings import Settings
    from modelyard.core.training.task_runtime import runtime_of

    if device != "cpu" and not (device.partition(":")[0] in ("cuda", "gpu") and device.partition(":")[2].isdigit()):
        raise ValueError(f"device must be 'cpu', 'cuda:N' or 'gpu:N', not {device!r}")
    host = plugins or default_plugin_host()
    extensions = _model_extensions(host)
    source = Path(path)
    if source.is_dir():
        parts = _folder_parts(source, extensions)
    elif source.is_file() and _exporter_for(source.name, extensions) is not None:
        parts = _Parts(source, source.name, model_path=source)
    elif source.is_file() and zipfile.is_zipfile(source):
        parts = _zip_parts(source, extensions)
    elif source.is_file():
        raise BundleError(f"{source} is neither a bundle ZIP nor a model file ({', '.join(sorted(extensions))})")
    else:
        raise BundleError(f"{source} does not exist")
    exporter = _exporter_for(parts.model_name, extensions)
    props, static_batch = _embedded_facts(parts)
    if parts.preprocessing is None and not any(key.startswith(METADATA_PREFIX) for key in props):
        raise BundleError(f"{source}: a bare model file must carry modelyard's metadata (an ONNX export does); "
                          "load the export's bundle ZIP or its unzipped folder instead")
    metadata = _metadata(parts, props)
    try:
        runtime = runtime_of(host.tasks.get(metadata.task, field="task"))
    except Exception as exc:  # an unknown task: its plugin is not installed here
        raise BundleError(f"{parts.source}: {exc}") from None
    if static_batch is None and runtime.export_input_axes() == {}:
        static_batch = 1  # the task's graph takes one image (detection), as the server assumes
    runtime_name = "onnxruntime" if exporter.id == "onnx" else exporter.id
    with _model_on_disk(parts) as model_path:
        try:
            run = load_export_runner(exporter, model_path, {}, torch_device([device]))
        except Exception as exc:
            from modelyard.core.errors import ValidationError

            if isinstance(exc, ValidationError):  # the device, not the file
                raise
            raise BundleError(f"{parts.source}: the model file {parts.model_name} cannot be loaded "
                              f"({type(exc).__name__}: {exc})") from None
        predictor = ExportPredictor(model_path, metadata, runtime, run, runtime_name, device, static_batch)
    return BundleModel(predictor, metadata, source, exporter.id, Settings().max_image_pixels)


# -- reading the bundle ------------------------------------------------------------------------


def _model_extensions(host: PluginHost) -> dict[str, Any]:
    """Model file extension -> its exporter (the first registered; the built-in one for ``.onnx``/``.pt``)."""
    found: dict[str, Any] = {}
    for exporter in host.exporters:
        found.setdefault(exporter.extension.lower(), exporter)
    return found


def _exporter_for(name: str, extensions: dict[str, Any]) -> Any:
    """The exporter of the longest registered extension ``name`` ends with (``.int8.onnx`` before ``.onnx``), or None."""
    lowered = name.lower()
    matching = [extension for extension in extensions if lowered.endswith(extension) and len(lowered) > len(extension)]
    return extensions[max(matching, key=len)] if matching else None


def _model_name(names: list[str], source: Path, extensions: dict[str, Any]) -> str:
    models = sorted(name for name in names if "/" not in name and _exporter_for(name, extensions) is not None)
    if len(models) != 1:
        what = "no model file" if not models else f"{len(models)} model files ({', '.join(models)})"
        raise BundleError(f"{source}: a bundle holds one model file ({', '.join(sorted(extensions))}); it has {what}")
    return models[0]


def _folder_parts(folder: Path, extensions: dict[str, Any]) -> _Parts:
    names = [entry.name for entry in folder.iterdir() if entry.is_file()]
    model_name = _model_name(names, folder, extensions)
    documents = {}
    for name in (LABELS_FILE, PREPROCESSING_FILE):
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{folder}: the bundle has no {name}")
        if path.stat().st_size > MAX_JSON_BYTES:
            raise BundleError(f"{folder}: {name} is larger than {MAX_JSON_BYTES} bytes")
        documents[name] = _parse_json(path.read_bytes(), name, folder)
    return _Parts(folder, model_name, model_path=folder / model_name, labels=documents[LABELS_FILE],
                  preprocessing=documents[PREPROCESSING_FILE])


def _safe_member(name: str, source: Path) -> str:
    """A member name that stays inside the archive (no absolute path, drive, ``..``, backslash or NUL)."""
    path = PurePosixPath(name)
    if (not name or name.startswith("/") or "\\" in name or "\x00" in name or ":" in name
            or any(part in ("..", ".") for part in name.rstrip("/").split("/"))
            or "//" in name or path.is_absolute()):
        raise BundleError(f"{source}: unsafe member name {name!r} in the ZIP (refused, nothing was read)")
    return name


def _zip_parts(source: Path, extensions: dict[str, Any]) -> _Parts:
    try:
        with zipfile.ZipFile(source) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_MEMBERS:
                raise BundleError(f"{source}: {len(infos)} members; a bundle has a handful (at most {MAX_MEMBERS})")
            members: dict[str, zipfile.ZipInfo] = {}
            for info in infos:
                name = _safe_member(info.filename, source)
                if info.is_dir():
                    continue
                if name in members:
                    raise BundleError(f"{source}: the ZIP holds {name!r} twice")
                members[name] = info
            model_name = _model_name(list(members), source, extensions)
            documents = {}
            for name in (LABELS_FILE, PREPROCESSING_FILE):
                if name not in members:
                    raise BundleError(f"{source}: the bundle has no {name}")
                documents[name] = _parse_json(_read_member(archive, members[name], MAX_JSON_BYTES, source), name,
                                              source)
            model_bytes = _read_member(archive, members[model_name], MAX_MODEL_BYTES, source)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise BundleError(f"{source}: not a readable ZIP ({type(exc).__name__}: {exc})") from None
    return _Parts(source, model_name, model_bytes=model_bytes, labels=documents[LABELS_FILE],
                  preprocessing=documents[PREPROCESSING_FILE])


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: Path) -> bytes:
    """A member's bytes, refused before reading when its declared size is over ``limit`` (a ZIP bomb)."""
    if info.file_size > limit:
        raise BundleError(f"{source}: {info.filename} unpacks to {info.file_size} bytes, more than {limit}")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{source}: {info.filename} unpacks to more than {limit} bytes")
    return data


def _parse_json(data: bytes, name: str, source: Path) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{source}: {name} is not valid JSON ({exc})") from None


@contextmanager
def _model_on_disk(parts: _Parts) -> Iterator[Path]:
    """The model file's path: where it lies, or (from a ZIP) a private temporary copy removed on exit."""
    if parts.model_path is not None:
        yield parts.model_path
        return
    assert parts.model_bytes is not None
    with tempfile.TemporaryDirectory(prefix="modelyard-bundle-") as folder:  # mode 0700, removed on exit
        path = Path(folder) / parts.model_name
        path.write_bytes(parts.model_bytes)
        yield path


def _embedded_facts(parts: _Parts) -> tuple[dict[str, str], int | None]:
    """An ONNX file's ``modelyard.*`` metadata_props and its static batch size (``None``: dynamic, or not ONNX)."""
    if Path(parts.model_name).suffix.lower() != ".onnx":
        return {}, None
    import onnx

    data = parts.model_bytes if parts.model_bytes is not None else parts.model_path.read_bytes()  # type: ignore[union-attr]
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise BundleError(f"{parts.source}: {parts.model_name} is not an ONNX model ({type(exc).__name__}: {exc})") from None
    props = {entry.key: entry.value for entry in proto.metadata_props}
    static_batch = None
    if proto.graph.input:
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            static_batch = int(dims[0].dim_value)
    return props, static_batch


# -- the deployment facts ----------------------------------------------------------------------


def _metadata(parts: _Parts, props: dict[str, str]) -> DeploymentMetadata:
    """Classes and preprocessing from labels.json/preprocessing.json, else from the ONNX file's metadata."""
    from modelyard.core.plugin_types import METADATA_KEYS, METADATA_PREFIX
    from modelyard.core.records import DeploymentMetadata

    where = parts.source
    prep = parts.preprocessing
    if prep is not None and not isinstance(prep, dict):
        raise BundleError(f"{where}: {PREPROCESSING_FILE} is not a JSON object")

    def fact(key: str) -> Any:
        if prep is not None and key in prep:
            return prep[key]
        raw = props.get(METADATA_PREFIX + key)
        if raw is None:
            origin = PREPROCESSING_FILE if prep is not None else f"the file's metadata ({METADATA_PREFIX}{key})"
            raise BundleError(f"{where}: {origin} does not give {key}; is it a modelyard export?")
        try:
            return json.loads(raw)
        except ValueError:
            return raw  # a plain string (the task, the architecture)

    classes = parts.labels if parts.labels is not None else fact("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise BundleError(f"{where}: the class names (labels.json) must be a non-empty list of strings")
    input_size = fact("input_size")
    if not (isinstance(input_size, list) and len(input_size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 16384 for v in input_size)):
        raise BundleError(f"{where}: input_size must be [height, width] in pixels, not {input_size!r}")
    channels = fact("channels")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise BundleError(f"{where}: channels must be 1 or 3, not {channels!r}")
    mean, std = fact("mean"), fact("std")
    for name, values in (("mean", mean), ("std", std)):
        if not (isinstance(values, list) and len(values) == channels
                and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            raise BundleError(f"{where}: {name} must be {channels} number(s), not {values!r}")
    if any(v == 0 for v in std):
        raise BundleError(f"{where}: std must not hold 0")
    task = (prep or {}).get("task") or props.get(METADATA_KEYS["task"]) or "classification"  # absent: as records before tasks
    if not isinstance(task, str):
        raise BundleError(f"{where}: task must be a task id, not {task!r}")
    return DeploymentMetadata(
        classes=list(classes), input_size=list(input_size), channels=int(channels),
        mean=[float(v) for v in mean], std=[float(v) for v in std],
        architecture=props.get(METADATA_KEYS["architecture"], ""), run_id=props.get(METADATA_KEYS["run_id"], ""),
        experiment_id="", checkpoint=props.get(METADATA_PREFIX + "checkpoint", ""), task=task,
        export=_task_facts(prep, props),
    )


#: Keys of preprocessing.json / metadata_props that are not a task's own export facts.
_KNOWN_KEYS = {"task", "input_size", "channels", "color_mode", "resize", "pillow", "scale", "mean", "std", "layout",
               "formula", "output", "classes", "architecture", "run_id", "experiment_id", "checkpoint"}


def _task_facts(prep: dict[str, Any] | None, props: dict[str, str]) -> dict[str, Any]:
    """The task's facts (detection's ``score_threshold``) from preprocessing.json, else the ONNX metadata."""
    from modelyard.core.plugin_types import METADATA_PREFIX

    if prep is not None:
        return {key: value for key, value in prep.items() if key not in _KNOWN_KEYS}
    facts: dict[str, Any] = {}
    for key, raw in props.items():
        name = key.removeprefix(METADATA_PREFIX)
        if key.startswith(METADATA_PREFIX) and name not in _KNOWN_KEYS:
            try:
                facts[name] = json.loads(raw)
            except ValueError:
                facts[name] = raw
    return facts


# -- images ------------------------------------------------------------------------------------


def _image_list(images: Any) -> list[Any]:
    if isinstance(images, str | os.PathLike | bytes | bytearray | memoryview) or _is_pil(images):
        return [images]
    if hasattr(images, "__iter__"):
        return list(images)
    raise TypeError(f"images must be a path, bytes, a PIL image or a list of them, not {type(images).__name__}")


def _is_pil(value: Any) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


#: Modes Pillow writes to PNG as they are; any other is converted to RGB first.
_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}


def _as_upload(image: Any, index: int) -> tuple[str, bytes]:
    """``(filename, bytes)`` as an upload would send it."""
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return path.name, path.read_bytes()
    if isinstance(image, bytes | bytearray | memoryview):
        return f"image-{index}", bytes(image)
    if _is_pil(image):
        buffer = io.BytesIO()
        (image if image.mode in _PNG_MODES else image.convert("RGB")).save(buffer, format="PNG")
        name = Path(getattr(image, "filename", "") or "").name or f"image-{index}"
        return name, buffer.getvalue()
    raise TypeError(f"image {index} must be a path, bytes or a PIL image, not {type(image).__name__}")
