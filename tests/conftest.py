"""Shared fixtures: a temp workspace, an app built by ``create_app``, a test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from modelyard.api.app import create_app
from modelyard.core import Task, TaskRegistry, hookimpl
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings

BASE_URL = "http://127.0.0.1:8000"


#: Folders of the long tests (real servers, training, kills). They are collected first so that a parallel run
#: (``make test``: pytest-xdist) starts them early instead of ending on one of them while the other workers idle.
LONG_TEST_FOLDERS = ("e2e", "reliability")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def long_first(item: pytest.Item) -> int:
        parts = item.path.relative_to(Path(__file__).parent).parts
        return 0 if parts and parts[0] in LONG_TEST_FOLDERS else 1

    items.sort(key=long_first)  # stable: the order within each group is unchanged


@pytest.fixture
def workspace_dir(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


@pytest.fixture
def import_root(tmp_path: Path) -> Path:
    root = tmp_path / "imports"
    root.mkdir()
    return root


@pytest.fixture
def settings(workspace_dir: Path, import_root: Path) -> Settings:
    return Settings(workspace=workspace_dir, import_roots=[import_root])


@pytest.fixture
def services(settings: Settings) -> Services:
    return build_services(settings)


@pytest.fixture
def app(settings: Settings, services: Services) -> Litestar:
    return create_app(settings, services)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(app, base_url=BASE_URL) as test_client:
        yield test_client


@pytest.fixture
def project_id(client: TestClient[Litestar]) -> str:
    response = client.post("/api/projects", json={"name": "Test project"})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def assert_error(response: object, status: int, code: str) -> dict:
    """Assert ``response`` is an error envelope with this status and code; return its ``error``."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert body["status"] == "error", body
    assert set(body["error"]) >= {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text  # type: ignore[attr-defined]
    return body["error"]


class _SecondTaskPlugin:
    """A plugin that registers one more task, the way a third-party task plugin does."""

    @hookimpl
    def register_tasks(self, registry: TaskRegistry) -> None:
        registry.add(Task(id="counting", name="Counting", description="How many objects an image shows",
                          annotation_types=("count",)))


@pytest.fixture
def second_task(services: Services) -> Iterator[str]:
    """A second registered task (through a real plugin), so rules about *changing* the task can be exercised."""
    services.plugins.add_plugin(_SecondTaskPlugin(), name="second-task")
    yield "counting"
    services.plugins.remove_plugin("second-task")  # the plugin host is the process's: leave it as it was


FIXTURES_DIR = Path(__file__).parent / "fixtures"
EXAMPLE_PLUGIN_DIR = FIXTURES_DIR / "modelyard_example_plugin"
REGRESSION_TASK_DIR = FIXTURES_DIR / "modelyard_regression_task"


def install_fixture_plugin(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """"Install" a plugin package of tests/fixtures in-process and for worker processes, as pip would.

    A ``.dist-info`` (METADATA + entry_points.txt, from the package's own
    pyproject.toml) goes into a temp folder on ``sys.path`` beside the package
    source, so ``importlib.metadata.entry_points(group="modelyard")`` finds it;
    ``PYTHONPATH`` says the same to the job workers the queue starts. The
    shared venv is never modified. Yields the distribution's name and version.
    """
    import os
    import sys
    import tomllib

    project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    site = tmp_path / "site-packages"
    dist_info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    entry_points = "".join(f"{name} = {value}\n" for name, value in project["entry-points"]["modelyard"].items())
    (dist_info / "entry_points.txt").write_text(f"[modelyard]\n{entry_points}", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(source))
    paths = [str(site), str(source), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    packages = set(project.get("entry-points", {}).get("modelyard", {}).values())
    yield {"name": project["name"], "version": project["version"]}
    for module in [m for m in sys.modules if m.split(".")[0] in packages]:
        sys.modules.pop(module, None)


@pytest.fixture
def example_plugin_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """tests/fixtures/modelyard_example_plugin, installed (``install_fixture_plugin``)."""
    yield from install_fixture_plugin(EXAMPLE_PLUGIN_DIR, tmp_path, monkeypatch)


@pytest.fixture
def regression_task_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """tests/fixtures/modelyard_regression_task (a task core does not know), installed (``install_fixture_plugin``)."""
    yield from install_fixture_plugin(REGRESSION_TASK_DIR, tmp_path, monkeypatch)


@pytest.fixture
def training_run(services: Services, project_id: str) -> Iterator[Path]:
    """A run of ``project_id`` that is training: ``running``, with a live stand-in worker and a heartbeat.

    The server's run supervisor sees a live, heartbeating worker and leaves
    the run alone, so the run stays ``running`` for the whole test.
    """
    import subprocess
    import sys

    from modelyard.core.timeutil import utc_now_iso
    from modelyard.core.training.run_folder import touch_heartbeat
    from tests.helpers.run_fixtures import make_run_folder

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], stdin=subprocess.DEVNULL)
    try:
        run_dir = make_run_folder(
            services.workspace, project_id, status="running",
            worker_pid=worker.pid, worker_pgid=worker.pid, started_at=utc_now_iso(),
        )
        touch_heartbeat(run_dir, worker.pid)
        yield run_dir
    finally:
        worker.kill()
        worker.wait()


# -- a tiny trained run (evaluation and export tests) ----------------------------------

TINY_TRAINING_CONFIG: dict[str, object] = {
    "model": {"architecture": "simple_cnn"},
    "data": {"image_size": [16, 16], "batch_size": 8, "num_workers": 0},
    "training": {"max_epochs": 2, "scheduler": {"name": "none"}},
    "hardware": {"devices": ["cpu"]},
}


class TrainedRun:
    """Ids and folder of a completed run with ``best.ckpt`` and ``last.ckpt``."""

    def __init__(self, project_id: str, experiment_id: str, run_id: str, run_dir: Path) -> None:
        self.project_id, self.experiment_id, self.run_id, self.run_dir = project_id, experiment_id, run_id, run_dir


@pytest.fixture(scope="session")
def trained_run_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainedRun]:
    """One tiny ``simple_cnn`` run on generated shapes, trained once per session with the real engine."""
    from modelyard.core.training.worker.engine import train_run
    from modelyard.core.training.experiments import ExperimentService
    from modelyard.core.training.run_folder import create_run_folder
    from tests.helpers.datasets import create_project_with_dataset

    root = tmp_path_factory.mktemp("trained") / "workspace"
    template = build_services(Settings(workspace=root))
    project = create_project_with_dataset(template, name="Trained shapes", per_class=10, size=20, num_classes=3)
    experiments = ExperimentService(template.workspace, template.plugins)
    experiment = experiments.create(project, "tiny", config=TINY_TRAINING_CONFIG)
    run_dir = create_run_folder(template.workspace, project, experiment["id"], experiments.run_config(project, experiment["id"]))
    assert train_run(template.workspace, run_dir) == "completed"
    return root, TrainedRun(project, experiment["id"], run_dir.name, run_dir)


@pytest.fixture
def trained_run(trained_run_template: tuple[Path, TrainedRun], services: Services) -> TrainedRun:
    """A private copy of the session's trained run inside this test's workspace."""
    import shutil

    root, run = trained_run_template
    shutil.copytree(root / "projects", services.workspace.projects_dir, dirs_exist_ok=True)
    run_dir = services.workspace.projects_dir / run.run_dir.relative_to(root / "projects")
    return TrainedRun(run.project_id, run.experiment_id, run.run_id, run_dir)


# -- a tiny trained detection run (detection export and prediction tests) ------------------

DETECTION_IMAGE_PX = 64
DETECTION_TRAINING_CONFIG: dict[str, object] = {
    "model": {"architecture": "simple_detector"},
    "data": {"image_size": [DETECTION_IMAGE_PX, DETECTION_IMAGE_PX], "batch_size": 8, "num_workers": 0},
    "training": {"max_epochs": 40, "scheduler": {"name": "none"}, "optimizer": {"lr": 0.01}},
    "hardware": {"devices": ["cpu"]},
}


@pytest.fixture(scope="session")
def detection_run_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainedRun]:
    """48 generated 64 px canvases imported as COCO, split 70/30, simple_detector trained 40 epochs (~10 s).

    Enough for boxes well above the heat map's untrained background, once per session.
    """
    from modelyard.core.datasets.splits import Ratios
    from modelyard.core.sample_data import generate_shapes_detection
    from modelyard.core.training.experiments import ExperimentService
    from modelyard.core.training.run_folder import create_run_folder
    from modelyard.core.training.worker.engine import train_run

    base = tmp_path_factory.mktemp("detection")
    root, imports = base / "workspace", base / "imports"
    generate_shapes_detection(imports / "shapes", num_images=48, size=DETECTION_IMAGE_PX, seed=3, max_objects=3)
    template = build_services(Settings(workspace=root, import_roots=[imports]))
    project = template.projects.create("Shapes detection", task="object_detection").id
    assert template.datasets.import_local(project, str(imports / "shapes"), format="coco")["imported"] == 48
    template.splits.create(project, "default", Ratios(train=0.7, val=0.3), seed=0)
    experiments = ExperimentService(template.workspace, template.plugins)
    experiment = experiments.create(project, "tiny detector", config=DETECTION_TRAINING_CONFIG)
    run_dir = create_run_folder(template.workspace, project, experiment["id"], experiments.run_config(project, experiment["id"]))
    assert train_run(template.workspace, run_dir, plugins=template.plugins) == "completed"
    return root, TrainedRun(project, experiment["id"], run_dir.name, run_dir)


@pytest.fixture
def detection_run(detection_run_template: tuple[Path, TrainedRun], services: Services) -> TrainedRun:
    """A private copy of the session's trained detection run inside this test's workspace."""
    import shutil

    root, run = detection_run_template
    shutil.copytree(root / "projects", services.workspace.projects_dir, dirs_exist_ok=True)
    return TrainedRun(run.project_id, run.experiment_id, run.run_id,
                      services.workspace.projects_dir / run.run_dir.relative_to(root / "projects"))
