"""Checkpoints: their names, writing and reading them, the resume point, and the trained model back.

A checkpoint is only ever read with ``torch.load(weights_only=True)``
(``read_checkpoint``), so a planted pickle cannot run code: it fails to load
like any torn file. It is written atomically (``write_checkpoint``). A torn or
foreign ``last.ckpt`` falls back to a loadable ``best.ckpt``; when neither
loads, a resume is refused with the reason instead of failing in the worker.

Evaluation and export start at ``load_trained_model``: the network is
rebuilt from the architecture registry with the run's own hyperparameters
(plain data stored by the task's ``TaskModule``) into the module of the
task that trained it, and images go through the
engine's own validation path: ``data.load_image`` (decode, RGB/L, bilinear
resize), the configured ``val`` augmentations, then the module's
normalisation. Nothing here re-implements preprocessing, so what is
evaluated or exported sees exactly what validation saw.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import CheckpointError, CheckpointNotFoundError, ExperimentNotFoundError, RunNotFoundError, ValidationError
from ..ids import is_valid_id
from ..jsonio import atomic_write_bytes
from ..workspace import Workspace
from .run_folder import CHECKPOINTS, RUN_JSON, runs_dir

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..plugin_manager import PluginHost
    from .config import ExperimentConfig
    from .worker.module import TaskModule

LAST = "last.ckpt"
BEST = "best.ckpt"
CORRUPT_SUFFIX = ".corrupt"


def write_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically: ``torch.save`` into memory, then a temp file, fsync, ``os.replace``."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: Path, *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """The one way a checkpoint file is read: ``torch.load(weights_only=True)``, tensors and plain data only.

    ``mmap`` maps the file instead of reading it: the tensors are read when
    used (a reader that needs only the weights skips the optimizer state).
    """
    import torch

    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def load_checkpoint(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint safely (plain data only) or raise ``CheckpointError`` saying why."""
    import pickle

    try:
        data = read_checkpoint(path, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path.name} cannot be loaded safely ({first_line[:200]})", {"file": path.name}) from exc
    if not isinstance(data, dict) or "state_dict" not in data or not isinstance(data.get("epoch"), int):
        raise CheckpointError(f"{path.name} is not a Lightning checkpoint", {"file": path.name})
    return data


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """Epochs fully trained when the checkpoint was written (Lightning's fit-loop progress)."""
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        return int(checkpoint["epoch"]) + 1


@dataclass
class ResumeCheckpoint:
    folder: Path
    epochs_done: int
    fallback_from: str | None = None  # set when last.ckpt was unusable and best.ckpt stands in

    def promote_to_last(self) -> None:
        """Make ``best.ckpt`` the resume point: keep the broken ``last.ckpt`` aside, copy best over it atomically."""
        last, best = self.folder / LAST, self.folder / BEST
        with contextlib.suppress(FileNotFoundError):
            os.replace(last, self.folder / (LAST + CORRUPT_SUFFIX))
        temp = self.folder / f".tmp-{LAST}"
        shutil.copyfile(best, temp)
        os.replace(temp, last)


def usable_checkpoint(folder: Path) -> ResumeCheckpoint | None:
    """The checkpoint to resume from; ``None`` when the run never wrote one.

    Raises ``CheckpointError`` when checkpoints exist but none loads.
    """
    problems: list[str] = []
    for name in (LAST, BEST):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            continue
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as exc:
            problems.append(exc.message)
            continue
        return ResumeCheckpoint(folder, epochs_done(checkpoint), fallback_from=None if name == LAST else LAST)
    if problems:
        raise CheckpointError("; ".join(problems), {"problems": problems})
    return None


CheckpointName = Literal["best", "last"]
#: The file of each checkpoint name a request may give.
CHECKPOINT_FILES: dict[str, str] = {"best": BEST, "last": LAST}
CHECKPOINT_NAMES: tuple[str, ...] = tuple(CHECKPOINT_FILES)


@dataclass(frozen=True)
class RunRef:
    """An existing run of an existing experiment, and the folder it lives in."""

    project_id: str
    experiment_id: str
    run_id: str
    run_dir: Path

    def checkpoint_path(self, checkpoint: str) -> Path:
        return self.run_dir / CHECKPOINTS / CHECKPOINT_FILES[checkpoint]


def find_run(workspace: Workspace, project_id: str, experiment_id: str, run_id: str) -> RunRef:
    """The run ``run_id`` of experiment ``experiment_id`` (404 for a missing project, experiment or run)."""
    workspace.existing_project_dir(project_id)
    folder = runs_dir(workspace, project_id, experiment_id)  # validates the experiment id
    if not folder.parent.is_dir():
        raise ExperimentNotFoundError(f"Experiment {experiment_id} not found", {"experiment_id": experiment_id})
    if not is_valid_id(run_id, "run") or not (folder / run_id / RUN_JSON).is_file():
        raise RunNotFoundError(
            f"Run {run_id} not found in experiment {experiment_id}", {"run_id": run_id, "experiment_id": experiment_id}
        )
    return RunRef(project_id, experiment_id, run_id, folder / run_id)


def existing_checkpoint(ref: RunRef, checkpoint: str) -> Path:
    """The checkpoint file ``best``/``last`` of the run, or a 409 saying which one is missing."""
    if checkpoint not in CHECKPOINT_NAMES:
        raise ValidationError(f"checkpoint must be one of {', '.join(CHECKPOINT_NAMES)}", field="checkpoint")
    path = ref.checkpoint_path(checkpoint)
    if not path.is_file() or path.is_symlink():
        raise CheckpointNotFoundError(
            f"Run {ref.run_id} has no '{checkpoint}' checkpoint (yet)", {"run_id": ref.run_id, "checkpoint": checkpoint}
        )
    return path


def frozen_config(ref: RunRef) -> ExperimentConfig:
    """The run's frozen ``config.yaml`` (what it trained with), parsed."""
    import yaml

    from ..errors import CorruptDataError
    from .config import parse_config
    from .run_folder import CONFIG_YAML

    try:
        document = yaml.safe_load((ref.run_dir / CONFIG_YAML).read_text(encoding="utf-8"))
        return parse_config(document or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise CorruptDataError(f"Run {ref.run_id} has an unreadable config.yaml", {"run_id": ref.run_id}) from exc


@dataclass
class TrainedModel:
    """A network in eval mode plus the facts a deployment needs (classes, input size, normalisation)."""

    module: TaskModule
    config: ExperimentConfig
    classes: list[str]
    image_size: tuple[int, int]  # (height, width)
    channels: int
    mean: list[float]
    std: list[float]
    architecture: str
    ref: RunRef
    checkpoint: str

    @property
    def net(self) -> nn.Module:
        """The plain network: normalised ``float32`` NCHW in, logits out (what exporters receive)."""
        return self.module.net

    @property
    def task(self) -> str:
        """The task that trained it (a checkpoint from before tasks were plugins is a classifier's)."""
        return str(self.module.hparams.get("task") or "classification")

    @property
    def split_index(self) -> int:
        return int(self.config.split_index)

    def load_uint8(self, paths: Sequence[Path]) -> torch.Tensor:
        """Decode, resize and apply the ``val`` augmentations: a ``uint8`` batch, as the val dataloader yields."""
        import torch

        from .augmentations import compose_augmentations
        from .worker.data import decode_all, load_image

        transform = compose_augmentations(self.config.data.augmentations.val, self.image_size, "config.data.augmentations.val")
        if transform is None:
            return decode_all(list(paths), self.image_size, self.channels)
        images = [transform(load_image(path, self.image_size, self.channels)) for path in paths]
        if not images:
            return torch.empty((0, self.channels, *self.image_size), dtype=torch.uint8)
        return torch.stack(images)

    def use_fast_cpu_layout(self) -> None:
        """Channels-last weights for inference on the CPU, where oneDNN's convolutions run ~40 % faster that way.

        Logits change in the last bits only (~1e-6). Exporters receive the
        network as trained, so this is for evaluation and prediction.
        """
        import torch

        if self.module.device.type == "cpu":
            self.module.to(memory_format=torch.channels_last)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """The module's own normalisation of a ``uint8`` batch (``/255``, ``-mean``, ``/std``)."""
        device_images = images.to(self.module.device)
        normalized, _ = self.module.on_after_batch_transfer((device_images, None), 0)
        return normalized

    def preprocess(self, paths: Sequence[Path]) -> torch.Tensor:
        """Files to the normalised ``float32`` batch the network takes (the run's validation preprocessing)."""
        return self.normalize(self.load_uint8(paths))

    def metadata(self) -> dict[str, Any]:
        """Deployment facts, as stored in export records and bundles."""
        return {
            "classes": list(self.classes),
            "input_size": list(self.image_size),
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "architecture": self.architecture,
            "run_id": self.ref.run_id,
            "experiment_id": self.ref.experiment_id,
            "checkpoint": self.checkpoint,
        }


def _built_from_weights(build_net: Callable[[str], nn.Module], state_dict: dict[str, Any], path: Path) -> nn.Module:
    """The network holding the checkpoint's weights, built without first initialising weights it would overwrite.

    Built on the ``meta`` device, a network gets no random initialisation (for
    resnet18 that is most of loading it) and adopts the checkpoint's tensors
    as they are. An architecture that computes tensors while it builds and
    keeps some outside its state dict cannot be built that way; it is built
    normally instead, with the same result.
    """
    import itertools

    net_state = {key.removeprefix("net."): value for key, value in state_dict.items() if key.startswith("net.")}
    if len(net_state) != len(state_dict):
        foreign = sorted(key for key in state_dict if not key.startswith("net."))
        raise CheckpointError(f"{path.name} does not fit its own architecture: unexpected keys {foreign[:5]}",
                              {"file": path.name})
    try:
        net = build_net("meta")
        net.load_state_dict(net_state, strict=True, assign=True)
        if not any(t.is_meta for t in itertools.chain(net.parameters(), net.buffers())):
            return net
        log.debug("%s: the network keeps tensors outside its state dict; building it normally", path.name)
    except Exception as exc:  # noqa: BLE001 - the normal build below reports real problems
        log.debug("%s: building on the meta device failed (%s); building normally", path.name, exc)
    net = build_net("cpu")
    try:
        net.load_state_dict(net_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path.name} does not fit its own architecture: {str(exc)[:300]}", {"file": path.name}) from exc
    return net


def load_trained_model(
    workspace: Workspace,
    project_id: str,
    run_id: str,
    checkpoint: str = "best",
    *,
    experiment_id: str | None = None,
    plugins: PluginHost | None = None,
    device: str = "cpu",
) -> TrainedModel:
    """Rebuild the network of ``run_id`` from its ``best``/``last`` checkpoint, in eval mode on ``device``."""
    from .run_folder import find_run_dir

    if experiment_id is None:
        run_dir = find_run_dir(workspace, project_id, run_id)
        experiment_id = run_dir.parent.parent.name
    ref = find_run(workspace, project_id, experiment_id, run_id)
    path = existing_checkpoint(ref, checkpoint)
    return _from_checkpoint_file(path, ref, checkpoint, plugins, device)


def _from_checkpoint_file(path: Path, ref: RunRef, checkpoint: str, plugins: PluginHost | None, device: str) -> TrainedModel:
    from ..models import build_model
    from ..plugin_manager import default_plugin_host
    from .config import parse_config
    from .task_runtime import runtime_of

    data = load_checkpoint(path, mmap=True)  # weights_only=True; CheckpointError when torn or foreign
    hparams = data.get("hyper_parameters")
    needed = ("num_classes", "class_names", "config", "mean", "std")
    if not isinstance(hparams, dict) or any(key not in hparams for key in needed):
        raise CheckpointError(f"{path.name} lacks the hyperparameters of a modelyard run", {"file": path.name})
    config = parse_config(dict(hparams["config"]))
    classes = [str(c) for c in hparams["class_names"]]
    host = plugins if plugins is not None else default_plugin_host()
    registry = host.architectures
    # a checkpoint from before tasks were plugins is a classifier's
    runtime = runtime_of(host.tasks.get(str(hparams.get("task") or "classification"), field="task"))
    registry.get(config.model.architecture, field="model.architecture")  # plugins load outside the meta device below
    image_size = (int(config.data.image_size[0]), int(config.data.image_size[1]))  # type: ignore[index]

    def build_net(on: str) -> nn.Module:
        import torch

        with torch.device(on):
            return build_model(
                registry,
                config.model.architecture,
                num_classes=len(classes),
                in_channels=int(config.data.channels),
                pretrained=False,  # the checkpoint holds every weight; never fetch anything
                dropout=float(config.model.dropout),
                image_size=image_size,
            )

    module = runtime.build_module(
        _built_from_weights(build_net, data["state_dict"], path),
        classes=classes,
        config=dict(hparams["config"]),
        mean=[float(v) for v in hparams["mean"]],
        std=[float(v) for v in hparams["std"]],
        options={},
    )
    module.eval().to(device)
    return TrainedModel(
        module=module,
        config=config,
        classes=classes,
        image_size=image_size,
        channels=int(config.data.channels),
        mean=[float(v) for v in hparams["mean"]],
        std=[float(v) for v in hparams["std"]],
        architecture=config.model.architecture,
        ref=ref,
        checkpoint=checkpoint,
    )
