"""A real tiny run with everything hook API 0.3 lets a config choose (issue 16 item 3).

One run trains with MLflow (a local ``file:`` store) and TensorBoard logging,
a callback plugin registered by the test, a registered loss (``focal``) and
registered metrics (``precision``, and ``micro_accuracy`` from the test's own
plugin); the tests read what each of them left:
MLflow's own client, TensorBoard's own event reader, the callback's counts,
``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import yaml

from modelyard.core import (
    CallbackPlugin,
    CallbackRegistry,
    Loss,
    LossRegistry,
    Metric,
    MetricRegistry,
    TrainingContext,
    hookimpl,
)
from modelyard.core.jsonio import read_json
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.services import build_services
from modelyard.core.settings import Settings
from modelyard.core.training.run_folder import create_run_folder, read_run
from modelyard.core.training.worker.engine import train_run
from modelyard.core.training.worker.training_plugins import ExperimentLoggers
from tests.conftest import TINY_TRAINING_CONFIG
from tests.helpers.datasets import create_project_with_dataset

EPOCHS = 2


class EpochCounter(L.Callback):
    def __init__(self, every: int, context: TrainingContext) -> None:
        self.every, self.context, self.epochs, self.fit_started = every, context, 0, 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_started += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs += 1


BUILT: list[EpochCounter] = []


def build_counter(options: dict[str, Any], context: TrainingContext) -> EpochCounter:
    BUILT.append(EpochCounter(options["every"], context))
    return BUILT[-1]


class CountingPlugin:
    @hookimpl
    def register_callbacks(self, registry: CallbackRegistry) -> None:
        registry.add(CallbackPlugin(
            name="epoch_counter", build=build_counter,
            options_schema={"type": "object", "properties": {"every": {"type": "integer", "minimum": 1, "default": 1}}},
        ))


def build_micro_accuracy(options: dict[str, Any], context: TrainingContext) -> Any:
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(context.num_classes, average="micro", validate_args=False)


def build_half_cross_entropy(options: dict[str, Any], context: TrainingContext) -> Any:
    import torch.nn.functional as F

    return lambda logits, labels: 0.5 * F.cross_entropy(logits, labels)


class MeasuringPlugin:
    """A third-party-style plugin with a metric and a loss of its own."""

    @hookimpl
    def register_metrics(self, registry: MetricRegistry) -> None:
        registry.add(Metric(name="micro_accuracy", build=build_micro_accuracy))

    @hookimpl
    def register_losses(self, registry: LossRegistry) -> None:
        registry.add(Loss(name="half_cross_entropy", build=build_half_cross_entropy))


class Trained:
    def __init__(self, run_dir: Path, mlruns: Path, project_id: str) -> None:
        self.run_dir, self.mlruns, self.project_id = run_dir, mlruns, project_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the plugin sets for a file: store; the reader needs it
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = tmp_path_factory.mktemp("plugins") / "workspace"
    host = PluginHost().load_all()
    host.add_plugin(CountingPlugin(), name="counting")
    host.add_plugin(MeasuringPlugin(), name="measuring")
    services = build_services(Settings(workspace=root), plugins=host)
    project = create_project_with_dataset(services, name="Logged shapes", per_class=8, size=20, num_classes=3)
    mlruns = root / "mlruns"
    config = {
        **TINY_TRAINING_CONFIG,
        "training": {"max_epochs": EPOCHS, "scheduler": {"name": "none"}, "loss": {"name": "focal", "options": {"gamma": 1.5}},
                     "metrics": [{"name": "precision"}, {"name": "micro_accuracy"}]},
        "logging": {"mlflow": {"tracking_uri": mlruns.as_uri(), "experiment_name": "x", "tags": {"team": "vision"}},
                    "tensorboard": {}},
        "callbacks": [{"name": "epoch_counter", "options": {"every": 2}}],
    }
    experiment = services.experiments.create(project, "logged", config=config)
    run_dir = create_run_folder(services.workspace, project, experiment["id"],
                                services.experiments.run_config(project, experiment["id"]))
    BUILT.clear()
    try:
        assert train_run(services.workspace, run_dir, plugins=host) == "completed", read_run(run_dir).error
    finally:
        monkeypatch.undo()
    return Trained(run_dir, mlruns, project)


@pytest.fixture
def mlflow_client(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Any:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=trained.mlruns.as_uri())


def _mlflow_run(client: Any) -> Any:
    experiment = client.get_experiment_by_name("x")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_mlflow_reads_back_the_flattened_config_as_params_and_the_run_as_tags(trained: Trained, mlflow_client: Any) -> None:
    run = _mlflow_run(mlflow_client)
    frozen = yaml.safe_load((trained.run_dir / "config.yaml").read_text())
    params = run.data.params
    assert params["model.architecture"] == "simple_cnn"
    assert params["training.max_epochs"] == str(EPOCHS)
    assert params["training.loss.name"] == "focal" and params["training.loss.options.gamma"] == "1.5"
    assert params["training.optimizer.lr"] == str(frozen["training"]["optimizer"]["lr"])
    assert run.data.tags["modelyard.run_id"] == trained.run_dir.name
    assert run.data.tags["modelyard.project_id"] == trained.project_id
    assert run.data.tags["team"] == "vision"
    assert run.info.run_name == trained.run_dir.name and run.info.status == "FINISHED"


def test_mlflow_holds_one_point_per_epoch_of_every_metrics_json_value(trained: Trained, mlflow_client: Any) -> None:
    run = _mlflow_run(mlflow_client)
    records = read_json(trained.run_dir / "metrics.json")
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    for key in ("train/loss", "val/loss", "val/acc", "val/f1", "val/precision", "lr"):
        history = mlflow_client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r[key])) for r in records], key


def test_mlflow_has_the_config_and_metrics_as_artifacts_and_the_best_checkpoint_path(trained: Trained,
                                                                                      mlflow_client: Any) -> None:
    run = _mlflow_run(mlflow_client)
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json"} <= artifacts and "checkpoints" not in artifacts  # log_checkpoint: false
    assert run.data.tags["modelyard.best_checkpoint"] == str(trained.run_dir / "checkpoints" / "best.ckpt")
    assert read_json(trained.run_dir / "mlflow.json")["run_id"] == run.info.run_id


def test_tensorboard_event_files_hold_the_epoch_scalars(trained: Trained) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = trained.run_dir / "tensorboard"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(log_dir)).Reload()
    records = read_json(trained.run_dir / "metrics.json")
    assert {"train/loss", "val/loss", "val/acc", "val/precision"} <= set(events.Tags()["scalars"])
    for key in ("train/loss", "val/loss", "val/precision"):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(r["epoch"], pytest.approx(r[key], rel=1e-5))
                                                                   for r in records]
    assert yaml.safe_load((log_dir / "hparams.yaml").read_text())["model.architecture"] == "simple_cnn"


def test_register_callbacks_callback_is_built_with_its_options_and_called_every_epoch(trained: Trained) -> None:
    assert len(BUILT) == 1
    counter = BUILT[0]
    assert (counter.every, counter.epochs, counter.fit_started) == (2, EPOCHS, 1)
    assert counter.context.run_dir == trained.run_dir and counter.context.num_classes == 3


def test_register_metrics_metric_is_in_every_epoch_record_and_the_run(trained: Trained) -> None:
    records = read_json(trained.run_dir / "metrics.json")
    assert all(0.0 <= r["val/precision"] <= 1.0 for r in records)
    assert "val/precision" in read_run(trained.run_dir).latest_metrics


def test_a_failing_logger_is_reported_once_and_the_run_goes_on() -> None:
    class Broken:
        calls = 0

        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            Broken.calls += 1
            raise ConnectionError("tracking server down")

    class Events:
        lines: list[dict[str, Any]] = []

        def append(self, kind: str, data: dict[str, Any]) -> None:
            self.lines.append(data)

    loggers = ExperimentLoggers({"remote": Broken()}, Events())  # type: ignore[arg-type]
    loggers.log_epoch({"epoch": 1, "val/loss": 0.5})
    loggers.log_epoch({"epoch": 2, "val/loss": 0.4})
    assert Broken.calls == 1
    assert len(Events.lines) == 1 and "tracking server down" in Events.lines[0]["message"]


def test_register_losses_losses_build_from_the_config_and_reach_the_module() -> None:
    import torch
    import torch.nn.functional as F

    from modelyard.plugins.classification import CROSS_ENTROPY, FOCAL
    from modelyard.plugins.classification.module import ClassificationModule
    from modelyard.plugins.simple_cnn import build_simple_cnn

    config = {"training": {"loss": {"name": "cross_entropy", "label_smoothing": 0.1}}}
    context = TrainingContext(run_dir=Path("."), run_id="run-x", project_id="p", project_name="P", experiment_id="e",
                              task="classification", config=config, class_names=["a", "b", "c"], workspace=Path("."),
                              class_weights=[1.0, 2.0, 0.5])
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    weight = torch.tensor([1.0, 2.0, 0.5])
    ce = CROSS_ENTROPY.build({}, context)
    assert torch.allclose(ce(logits, labels), F.cross_entropy(logits, labels, weight=weight, label_smoothing=0.1))
    focal_at_0 = FOCAL.build({"gamma": 0.0}, context)  # gamma 0 is class-weighted cross-entropy
    assert torch.allclose(focal_at_0(logits, labels), F.cross_entropy(logits, labels, weight=weight), atol=1e-6)
    assert float(FOCAL.build({"gamma": 2.0}, context)(logits, labels)) < float(focal_at_0(logits, labels))

    def module() -> ClassificationModule:
        return ClassificationModule(build_simple_cnn(3), num_classes=3, class_names=["a", "b", "c"], config=config,
                                    mean=[0.5] * 3, std=[0.25] * 3, class_weights=[1.0, 2.0, 0.5])

    built_in, registered = module(), module()
    registered.use_loss(ce)  # the same loss through the registry: the same numbers, train and validation
    assert torch.equal(built_in._loss(logits, labels), registered._loss(logits, labels))
    assert torch.equal(built_in._val_loss_sums(logits, labels), registered._val_loss_sums(logits, labels))
    assert set(registered.state_dict()) == set(built_in.state_dict())  # the loss is no sub-module: no checkpoint keys


def test_register_callbacks_loggers_write_once_under_cpu_ddp(services: Any) -> None:
    """Two CPU processes (gloo) through the real worker: one event file, one point per epoch."""
    import os
    import subprocess

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from modelyard.core.jobs.folder import Claimant
    from modelyard.core.jobs.kinds import TRAIN
    from modelyard.core.jobs.spawn import cold_command

    project = create_project_with_dataset(services, per_class=6, size=16)
    config = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 2, "scheduler": {"name": "none"}, "early_stopping": None},
              "hardware": {"devices": ["cpu"], "num_processes": 2}, "logging": {"tensorboard": {}}}
    experiment = services.experiments.create(project, "ddp", config=config)
    run_dir = create_run_folder(services.workspace, project, experiment["id"],
                                services.experiments.run_config(project, experiment["id"]))
    TRAIN.job(services.workspace, run_dir).claim(Claimant.this_process("server"))
    env = {key: value for key, value in os.environ.items() if key != "LOCAL_RANK"}
    result = subprocess.run(cold_command(TRAIN, run_dir, services.workspace.root), cwd=run_dir, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and read_run(run_dir).status == "completed", result.stderr[-3000:]
    files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [1, 2]


def test_a_third_party_metric_is_computed_like_the_built_in_one_it_copies(trained: Trained) -> None:
    records = read_json(trained.run_dir / "metrics.json")
    assert [r["val/micro_accuracy"] for r in records] == [pytest.approx(r["val/acc"], abs=1e-6) for r in records]


def test_a_third_party_loss_is_accepted_by_name_and_builds_what_the_plugin_returns(tmp_path: Path) -> None:
    import torch
    import torch.nn.functional as F

    host = PluginHost().load_all()
    host.add_plugin(MeasuringPlugin(), name="measuring")
    services = build_services(Settings(workspace=tmp_path / "workspace"), plugins=host)
    project = create_project_with_dataset(services, name="Loss", per_class=2, size=16, num_classes=2)
    config = {**TINY_TRAINING_CONFIG, "training": {"loss": {"name": "half_cross_entropy"}}}
    experiment = services.experiments.create(project, "half", config=config)
    assert services.experiments.run_config(project, experiment["id"]).training.loss.name == "half_cross_entropy"
    loss = host.losses.get("half_cross_entropy").build({}, None)  # type: ignore[arg-type]
    logits, labels = torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    assert torch.allclose(loss(logits, labels), 0.5 * F.cross_entropy(logits, labels))
