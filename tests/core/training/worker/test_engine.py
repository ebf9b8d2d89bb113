"""The training engine (core/training/worker/engine.py): real tiny fits of simple_cnn on generated shapes.

Most assertions read the session's trained run (tests/conftest.py: trained
once, copied per test); the tests that need a run in another state train
their own, in process, for one or two epochs on 16-20 px images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from modelyard.core import Architecture, hookimpl, load_backbone_weights
from modelyard.core.jsonio import read_json
from modelyard.core.records import Run, RunCheckpoints, RunEarlyStop
from modelyard.core.training.worker.engine import train_run
from modelyard.core.training.run_folder import EventLog, create_run_folder, read_run, update_run
from tests.conftest import TINY_TRAINING_CONFIG, TrainedRun
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.evil import write_evil_pickle

METRIC_KEYS = {"epoch", "train/loss", "train/acc", "val/loss", "val/acc", "val/f1", "lr", "time_s", "images_per_s"}


def new_run(services, project_id: str, config: dict, name: str = "tiny") -> Path:
    """A pending run folder of a new experiment, created exactly as the API and the CLI create one."""
    experiment = services.experiments.create(project_id, name, config=config)
    return create_run_folder(services.workspace, project_id, experiment["id"],
                             services.experiments.run_config(project_id, experiment["id"]))


def without_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time_s", "images_per_s")} for r in records]


def set_max_epochs(run_dir: Path, max_epochs: int) -> None:
    """What the server's resume does to the frozen config when asked for more epochs."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["training"]["max_epochs"] = max_epochs
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


# -- one completed run ------------------------------------------------------------------


def test_completed_run_writes_one_metrics_record_per_epoch(trained_run: TrainedRun) -> None:
    metrics = read_json(trained_run.run_dir / "metrics.json")
    assert [m["epoch"] for m in metrics] == [1, 2]
    for record in metrics:
        assert set(record) == METRIC_KEYS
        assert 0.0 <= record["train/acc"] <= 1.0 and 0.0 <= record["val/acc"] <= 1.0
        assert record["train/loss"] > 0 and record["time_s"] > 0 and record["images_per_s"] > 0


def test_events_have_ids_strictly_increasing_from_one_and_finish_with_end(trained_run: TrainedRun) -> None:
    lines = (trained_run.run_dir / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    names = [e["event"] for e in events]
    assert names[0] == "status" and events[0]["data"]["status"] == "running"
    assert names[-2:] == ["status", "end"] and events[-1]["data"]["status"] == "completed"
    assert [e["data"]["epoch"] for e in events if e["event"] == "epoch"] == [1, 2]
    progress = [e["data"] for e in events if e["event"] == "progress"]
    assert progress and progress[0]["steps_per_epoch"] == 3 and progress[0]["total_epochs"] == 2  # 18 images, batch 8


def test_both_checkpoints_load_with_weights_only_and_hold_plain_hyperparameters(trained_run: TrainedRun) -> None:
    folder = trained_run.run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temp files left behind
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    best = torch.load(folder / "best.ckpt", map_location="cpu", weights_only=True)
    hparams = last["hyper_parameters"]
    assert hparams["class_names"] == ["circle", "square", "triangle"] and hparams["num_classes"] == 3
    assert hparams["mean"] == [0.485, 0.456, 0.406] and hparams["config"]["model"]["architecture"] == "simple_cnn"
    assert all(key.startswith("net.") for key in last["state_dict"])
    assert last["global_step"] == 6 and best["global_step"] in (3, 6)


def test_run_json_reports_completion_with_latest_and_best_metrics(trained_run: TrainedRun) -> None:
    run = read_run(trained_run.run_dir)
    metrics = read_json(trained_run.run_dir / "metrics.json")
    assert run.status == "completed" and run.error is None and run.finished_at.endswith("Z")
    assert run.latest_metrics == metrics[-1]
    best = min(metrics, key=lambda m: m["val/loss"])
    assert run.best_metrics == best and run.best_epoch == best["epoch"]
    assert run.checkpoints == RunCheckpoints(best="checkpoints/best.ckpt", last="checkpoints/last.ckpt")
    assert run.progress.epoch == 2 and run.progress.images_per_s > 0
    assert run.timings.train_s > 0 and run.worker_pid is not None
    stored = read_json(trained_run.run_dir / "run.json")
    assert set(stored) == set(Run.__struct_fields__)  # the file is the record: every field, nothing else
    assert all(stored[name] is None for name in Run.DERIVED)


def test_reproducibility_json_records_hashes_versions_and_seed(trained_run: TrainedRun) -> None:
    record = read_json(trained_run.run_dir / "reproducibility.json")
    assert record["seed"] == 42 and record["precision"] == "32-true" and record["devices"] == ["cpu"]
    assert len(record["config_hash"]) == len(record["dataset_fingerprint"]) == len(record["split_hash"]) == 64
    assert {"torch", "lightning", "modelyard", "torchvision"} <= set(record["versions"])
    assert record["num_train_images"] == 18 and record["num_val_images"] == 6
    assert record["data_cache"] == "memory"


def test_a_finished_run_is_left_alone(services, trained_run: TrainedRun) -> None:
    before = (trained_run.run_dir / "events.jsonl").read_bytes()
    assert train_run(services.workspace, trained_run.run_dir) == "completed"
    assert (trained_run.run_dir / "events.jsonl").read_bytes() == before


# -- reproducibility ------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_metrics(services, trained_run: TrainedRun) -> None:
    again = create_run_folder(services.workspace, trained_run.project_id, trained_run.experiment_id,
                              services.experiments.run_config(trained_run.project_id, trained_run.experiment_id))
    assert train_run(services.workspace, again) == "completed"
    first = read_json(trained_run.run_dir / "metrics.json")
    second = read_json(again / "metrics.json")
    assert without_time(second) == without_time(first)
    a = torch.load(trained_run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(again / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_leaves_the_process_wide_determinism_flags_as_it_found_them(services, trained_run: TrainedRun) -> None:
    import torch.utils.deterministic as torch_deterministic

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch_deterministic.fill_uninitialized_memory)
    again = create_run_folder(services.workspace, trained_run.project_id, trained_run.experiment_id,
                              services.experiments.run_config(trained_run.project_id, trained_run.experiment_id))
    assert train_run(services.workspace, again) == "completed"
    assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch_deterministic.fill_uninitialized_memory) == before


# -- stop and resume ---------------------------------------------------------------------------


def test_stop_request_ends_after_the_current_step_and_resume_continues_that_epoch(services) -> None:
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    config = {**TINY_TRAINING_CONFIG, "data": {"image_size": [16, 16], "batch_size": 4, "num_workers": 0},
              "training": {"max_epochs": 1, "scheduler": {"name": "none"}}}
    run_dir = new_run(services, project_id, config)
    (run_dir / "stop.request").write_text("{}")  # as POST .../stop writes it

    assert train_run(services.workspace, run_dir) == "stopped"

    run = read_run(run_dir)
    assert run.status == "stopped" and run.error is None
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1  # finished the step it was in, no more
    assert not (run_dir / "metrics.json").exists()  # a cut-short epoch is not an epoch record
    assert not (run_dir / "checkpoints" / "best.ckpt").exists()

    resumed = services.runs.resume_run(project_id, run_dir.name, max_epochs=2)
    assert resumed.resumes[-1].from_epoch == 0
    mark = EventLog(services.workspace, run_dir).last_id()
    assert train_run(services.workspace, run_dir, resume=True) == "completed"

    new_events = EventLog(services.workspace, run_dir).read(after_id=mark)
    first_progress = next(e["data"] for e in new_events if e["event"] == "progress")
    assert (first_progress["epoch"], first_progress["step"]) == (1, 2)  # continued, not restarted at step 1
    assert [e["data"]["epoch"] for e in new_events if e["event"] == "epoch"] == [1, 2]
    steps_per_epoch = first_progress["steps_per_epoch"]
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 2 * steps_per_epoch
    assert [m["epoch"] for m in read_json(run_dir / "metrics.json")] == [1, 2]


def test_stop_request_on_an_epochs_last_step_lets_that_epoch_finish_and_be_recorded(services) -> None:
    # Lightning counts a checkpoint taken after an epoch's last step as a finished epoch on resume, skipping its
    # validation and record: such a stop must end the epoch normally instead (one step per epoch here).
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    config = {**TINY_TRAINING_CONFIG, "data": {"image_size": [16, 16], "batch_size": 64, "num_workers": 0},
              "training": {"max_epochs": 3, "scheduler": {"name": "none"}, "early_stopping": None}}
    run_dir = new_run(services, project_id, config)
    (run_dir / "stop.request").write_text("{}")

    assert train_run(services.workspace, run_dir) == "stopped"

    assert [m["epoch"] for m in read_json(run_dir / "metrics.json")] == [1]
    assert "val/loss" in read_json(run_dir / "metrics.json")[0]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1
    resumed = services.runs.resume_run(project_id, run_dir.name, max_epochs=2)
    assert resumed.resumes[-1].from_epoch == 1

    mark = EventLog(services.workspace, run_dir).last_id()
    assert train_run(services.workspace, run_dir, resume=True) == "completed"
    new_events = EventLog(services.workspace, run_dir).read(after_id=mark)
    assert [e["data"]["epoch"] for e in new_events if e["event"] == "epoch"] == [2]
    assert [m["epoch"] for m in read_json(run_dir / "metrics.json")] == [1, 2]


def test_early_stopping_says_in_the_record_and_the_event_stream_after_which_epoch_it_ended(services) -> None:
    # min_delta far above any change of val/loss: epoch 1 sets the best, epoch 2 does not improve on it.
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    config = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 5, "scheduler": {"name": "none"},
                                                   "early_stopping": {"patience": 1, "min_delta": 1000.0}}}
    run_dir = new_run(services, project_id, config)

    assert train_run(services.workspace, run_dir) == "completed"

    stopped = {"epoch": 2, "monitor": "val/loss", "patience": 1, "max_epochs": 5}
    assert read_run(run_dir).stopped_early == RunEarlyStop(**stopped)
    assert [m["epoch"] for m in read_json(run_dir / "metrics.json")] == [1, 2]
    events = EventLog(services.workspace, run_dir).read()
    assert events[-1]["event"] == "end" and events[-1]["data"]["stopped_early"] == stopped
    logged = [e["data"]["message"] for e in events if e["event"] == "log"]
    assert "early stopping: val/loss did not improve for 1 epoch(s); stopped after epoch 2 of 5" in logged


def test_a_run_that_trains_all_its_epochs_has_no_early_stop(trained_run: TrainedRun) -> None:
    record = read_json(trained_run.run_dir / "run.json")
    assert record["status"] == "completed" and record["stopped_early"] is None
    end = [json.loads(line) for line in (trained_run.run_dir / "events.jsonl").read_text().splitlines()][-1]
    assert end["event"] == "end" and end["data"]["stopped_early"] is None


def interrupt(services, run: TrainedRun, max_epochs: int) -> None:
    """The run as the server leaves it before a resume: pending again, maybe with more epochs."""
    update_run(services.workspace, run.run_dir, lambda r: r.with_fields(status="pending"))
    set_max_epochs(run.run_dir, max_epochs)


def test_best_checkpoint_still_holds_the_best_epoch_after_resuming_a_moved_run(services, trained_run: TrainedRun) -> None:
    # trained_run is a copy of the session's run: its checkpoints name the folder it was trained in
    interrupt(services, trained_run, max_epochs=4)
    assert train_run(services.workspace, trained_run.run_dir, resume=True) == "completed"
    metrics = read_json(trained_run.run_dir / "metrics.json")
    best_epoch = min(metrics, key=lambda m: m["val/loss"])["epoch"]
    best = torch.load(trained_run.run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["global_step"] == best_epoch * 3
    assert read_run(trained_run.run_dir).best_epoch == best_epoch


def test_truncated_last_checkpoint_resumes_from_best_instead(services, trained_run: TrainedRun) -> None:
    folder = trained_run.run_dir / "checkpoints"
    best_step = torch.load(folder / "best.ckpt", weights_only=True)["global_step"]
    (folder / "last.ckpt").write_bytes((folder / "last.ckpt").read_bytes()[:2048])
    interrupt(services, trained_run, max_epochs=3)

    assert train_run(services.workspace, trained_run.run_dir, resume=True) == "completed"

    messages = [e["data"].get("message", "") for e in EventLog(services.workspace, trained_run.run_dir).read()]
    assert any("last.ckpt is damaged" in m for m in messages)
    assert (folder / "last.ckpt.corrupt").exists()
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 3 * 3
    assert [m["epoch"] for m in read_json(trained_run.run_dir / "metrics.json")] == [1, 2, 3]
    assert best_step in (3, 6)


def test_damaged_checkpoints_fail_the_resume_with_a_clear_error(services, trained_run: TrainedRun) -> None:
    folder = trained_run.run_dir / "checkpoints"
    for name in ("last.ckpt", "best.ckpt"):
        (folder / name).write_bytes((folder / name).read_bytes()[:100])
    interrupt(services, trained_run, max_epochs=3)

    assert train_run(services.workspace, trained_run.run_dir, resume=True) == "failed"

    error = read_run(trained_run.run_dir).error
    assert error.type == "CheckpointError"
    assert "last.ckpt cannot be loaded" in error.message and "Traceback" not in error.message
    events = EventLog(services.workspace, trained_run.run_dir).read()
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "failed"


def test_a_malicious_pickle_planted_as_checkpoint_is_never_executed(services, trained_run: TrainedRun,
                                                                   tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name in ("last.ckpt", "best.ckpt"):
        write_evil_pickle(trained_run.run_dir / "checkpoints" / name, marker)
    interrupt(services, trained_run, max_epochs=3)

    assert train_run(services.workspace, trained_run.run_dir, resume=True) == "failed"

    assert not marker.exists()
    assert read_run(trained_run.run_dir).error.type == "CheckpointError"


def test_a_malicious_pickle_given_as_weights_path_is_never_executed(services, tmp_path: Path) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    marker = tmp_path / "pwned"
    weights = write_evil_pickle(services.workspace.root / "uploads" / "weights.pt", marker)
    config = {**TINY_TRAINING_CONFIG, "model": {"architecture": "simple_cnn", "weights_path": str(weights)}}
    run_dir = new_run(services, project_id, config)

    assert train_run(services.workspace, run_dir) == "failed"

    assert not marker.exists()
    error = read_run(run_dir).error
    assert error.type == "ValidationError" and "weights.pt" in error.message


def test_a_failure_records_its_type_and_message_and_ends_the_event_stream(services) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    run_dir = new_run(services, project_id, TINY_TRAINING_CONFIG)
    victim = sorted(services.workspace.images_dir(project_id).iterdir())[0]
    victim.write_bytes(b"not an image")

    assert train_run(services.workspace, run_dir) == "failed"

    run = read_run(run_dir)
    assert run.error.type == "CorruptDataError" and victim.name in run.error.message
    assert run.finished_at is not None
    events = EventLog(services.workspace, run_dir).read()
    assert [e["event"] for e in events][-3:] == ["log", "status", "end"]
    assert events[-3]["data"]["level"] == "error"


# -- model.weights_path with another head (0.3) ----------------------------------------------------------


class _OwnLoaderPlugin:
    """A plugin architecture whose build receives ``weights_path`` and loads it with ``load_backbone_weights``."""

    def __init__(self) -> None:
        self.paths: list[object] = []

    @hookimpl
    def register_architectures(self, registry) -> None:  # type: ignore[no-untyped-def]
        from modelyard.plugins.simple_cnn import build_simple_cnn

        def build(num_classes, in_channels=3, pretrained=False, dropout=0.0, weights_path=None, **options):  # type: ignore[no-untyped-def]
            self.paths.append(weights_path)
            model = build_simple_cnn(num_classes, in_channels=in_channels, dropout=dropout)
            if weights_path is not None:
                load_backbone_weights(model, weights_path, head="1")
            return model

        registry.add(Architecture(name="own_loader_cnn", build=build, head_name="1"))


def test_a_run_from_weights_with_another_head_records_the_skipped_keys(services) -> None:
    from modelyard.plugins.simple_cnn import build_simple_cnn

    plugin = _OwnLoaderPlugin()
    services.plugins.add_plugin(plugin, name="own_loader")
    try:
        project_id = create_project_with_dataset(services, per_class=4, size=16)
        weights = services.workspace.root / "uploads" / "ten-classes.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(build_simple_cnn(10).state_dict(), weights)
        config = {**TINY_TRAINING_CONFIG, "model": {"architecture": "own_loader_cnn", "weights_path": str(weights)},
                  "training": {"max_epochs": 1, "scheduler": {"name": "none"}}}
        run_dir = new_run(services, project_id, config)

        assert train_run(services.workspace, run_dir, plugins=services.plugins) == "completed"
    finally:
        services.plugins.remove_plugin("own_loader")

    assert weights.resolve() in plugin.paths
    [loaded] = read_json(run_dir / "reproducibility.json")["initial_weights"]
    assert loaded["path"] == str(weights.resolve()) and loaded["loaded_keys"] > 0
    assert loaded["skipped_keys"] == ["1.1.bias", "1.1.weight"] and loaded["head"] == ["1"]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert any("skipped from the file: 1.1.bias, 1.1.weight" in e["data"].get("message", "") for e in events if e["event"] == "log")


def test_a_run_without_weights_records_no_initial_weights(trained_run: TrainedRun) -> None:
    assert read_json(trained_run.run_dir / "reproducibility.json")["initial_weights"] == []
