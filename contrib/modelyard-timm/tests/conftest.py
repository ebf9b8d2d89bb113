"""Fixtures of modelyard-timm's tests: offline timm, the plugin host, and one tiny run trained by modelyard's engine.

Nothing here reaches the network: the hub clients are told they are offline
(before timm is imported, and inherited by the worker processes the API
starts), every model is built with ``pretrained=False`` or from files the
tests write, and the torch and Hugging Face caches point into the test's own
folders. These tests need the package installed (``pip install -e
contrib/modelyard-timm``): modelyard's export workers find plugins through
their entry points.
"""

from __future__ import annotations

import os

# Before anything imports timm / huggingface_hub (they read these once).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from modelyard.core.plugin_manager import PluginHost  # noqa: E402
from modelyard.testing import registered  # noqa: E402
from modelyard_timm import plugin  # noqa: E402

#: The host header the app accepts (Litestar's TestClient otherwise sends ``testserver.local``: a 403).
BASE_URL = "http://127.0.0.1:8000"
#: The trained run's architecture and size (BatchNorm needs more than one value per channel: 64 px keeps the
#: last stage at 2x2 even for a final batch of one image).
RUN_ARCHITECTURE = "timm_resnet18"
RUN_IMAGE_SIZE = 64
CLASSES = ("diagonal", "horizontal", "vertical")


def write_stripes(root: Path, per_class: int = 30, size: int = 32, seed: int = 0) -> None:
    """``root/<orientation>/*.png``: stripes of random colours, period and phase, one folder per orientation.

    A dataset a network learns in a few CPU epochs from scratch (modelyard's
    generated shapes, in random colours, sizes and places, take many more), so
    the exports below are of a model that really tells classes apart.
    """
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for name in CLASSES:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            background = tuple(rng.randrange(256) for _ in range(3))
            colour = tuple((c + 128 + rng.randrange(-40, 40)) % 256 for c in background)
            image = Image.new("RGB", (size, size), background)  # type: ignore[arg-type]
            draw = ImageDraw.Draw(image)
            period = rng.randrange(6, 11)
            width, phase = period // 2, rng.randrange(period)
            for start in range(-2 * size + phase, 2 * size, period):
                if name == "horizontal":
                    draw.rectangle((0, start, size, start + width - 1), fill=colour)  # type: ignore[arg-type]
                elif name == "vertical":
                    draw.rectangle((start, 0, start + width - 1, size), fill=colour)  # type: ignore[arg-type]
                else:
                    draw.polygon([(start, 0), (start + width, 0), (start + width + size, size), (start + size, size)],
                                 fill=colour)  # type: ignore[arg-type]
            image.save(folder / f"{name}_{index:04d}.png")


@pytest.fixture(autouse=True)
def offline_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty, private weight caches: a test never sees (or fills) the user's real ones."""
    caches = tmp_path_factory.mktemp("caches", numbered=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(caches / "huggingface" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(caches / "torch"))


@pytest.fixture(scope="session")
def host() -> PluginHost:
    """A plugin host holding only modelyard-timm (``modelyard.testing.registered``)."""
    return registered(plugin, name="timm")


def build_client(workspace: Path, import_roots: list[Path] | None = None) -> Iterator[object]:
    """The real app over ``workspace`` (``create_app``), with its job queue and worker processes."""
    from litestar.testing import TestClient

    from modelyard.api.app import create_app
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    settings = Settings(workspace=workspace, import_roots=import_roots or [])
    app = create_app(settings, build_services(settings))
    with TestClient(app, base_url=BASE_URL) as client:
        yield client


def write_imagenet_weights(path: Path, timm_name: str, seed: int = 0) -> dict[str, object]:
    """A 1000-class timm state dict (random, ``pretrained=False``) saved as safetensors: ImageNet weights' shape."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    state = {key: value.contiguous() for key, value in timm.create_model(timm_name, num_classes=1000).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return state


@pytest.fixture(scope="session")
def save_imagenet_weights():  # type: ignore[no-untyped-def]
    """``save_imagenet_weights(path, timm_name, seed=0) -> state dict`` (``write_imagenet_weights``)."""
    return write_imagenet_weights


@pytest.fixture(scope="session")
def client_for():  # type: ignore[no-untyped-def]
    """``client_for(workspace, import_roots)``: a context manager yielding a TestClient of the real app."""
    return contextmanager(build_client)


@pytest.fixture(scope="session")
def stripes():  # type: ignore[no-untyped-def]
    """``stripes(root, per_class=30, size=32, seed=0)``: write the stripes dataset (``write_stripes``)."""
    return write_stripes


class TrainedRun:
    """A completed run of ``RUN_ARCHITECTURE`` (started from a 1000-class weights file) in a template workspace."""

    def __init__(self, workspace: Path, project_id: str, experiment_id: str, run_id: str, run_dir: Path,
                 weights_file: Path) -> None:
        self.workspace, self.project_id, self.experiment_id = workspace, project_id, experiment_id
        self.run_id, self.run_dir, self.weights_file = run_id, run_dir, weights_file


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Generated stripes imported and split 60/40, timm_resnet18 trained 3 epochs on the CPU by the real engine.

    The model starts from a 1000-class state dict in the import root
    (``model.weights_path``): the backbone is loaded, the head is new.
    Once per session (per xdist worker; the tests that use it share a file).
    """
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings
    from modelyard.core.training.run_folder import create_run_folder
    from modelyard.core.training.worker.engine import train_run

    base = tmp_path_factory.mktemp("trained")
    workspace, imports = base / "workspace", base / "imports"
    write_stripes(imports / "stripes", per_class=30, seed=4)
    weights = imports / "resnet18-imagenet.safetensors"
    write_imagenet_weights(weights, "resnet18")
    services = build_services(Settings(workspace=workspace, import_roots=[imports]))
    project = services.projects.create("timm stripes").id
    assert services.datasets.import_local(project, str(imports / "stripes"), format="imagefolder")["imported"] == 90
    services.splits.create(project, "default", Ratios(train=0.6, val=0.4), seed=0)
    config = {
        "model": {"architecture": RUN_ARCHITECTURE, "weights_path": str(weights)},
        "data": {"image_size": [RUN_IMAGE_SIZE, RUN_IMAGE_SIZE], "batch_size": 16, "num_workers": 0},
        "training": {"max_epochs": 3, "scheduler": {"name": "none"}, "optimizer": {"name": "adamw", "lr": 0.002}},
        "hardware": {"devices": ["cpu"]},
    }
    experiment = services.experiments.create(project, "resnet18 from imagenet-shaped weights", config=config)
    run_dir = create_run_folder(services.workspace, project, experiment["id"],
                                services.experiments.run_config(project, experiment["id"]))
    assert train_run(services.workspace, run_dir, plugins=services.plugins) == "completed"
    return TrainedRun(workspace, project, experiment["id"], run_dir.name, run_dir, weights)
