"""Liveness and per-step work of the engine (issue 12 item 7), through real tiny fits.

The heartbeat comes from training progress, so a step that hangs lets it go
stale; the stop file is looked at on a clock, not on every step.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from modelyard.core.jsonio import read_json
from modelyard.core.training.worker import callbacks as callbacks_module
from modelyard.core.training.worker.callbacks import RunFilesCallback
from modelyard.core.training.worker.engine import train_run
from modelyard.plugins.classification.module import ClassificationModule
from modelyard.core.training.run_folder import create_run_folder, heartbeat_age_s
from tests.conftest import TINY_TRAINING_CONFIG
from tests.helpers.datasets import create_project_with_dataset

_NAMES = itertools.count()
CONFIG = {**TINY_TRAINING_CONFIG, "data": {"image_size": [16, 16], "batch_size": 2, "num_workers": 0},
          "training": {"max_epochs": 1, "scheduler": {"name": "none"}, "early_stopping": None}}


def _run(services: Any, project_id: str) -> Path:
    experiment = services.experiments.create(project_id, f"live-{next(_NAMES)}", config=CONFIG)
    return create_run_folder(services.workspace, project_id, experiment["id"],
                             services.experiments.run_config(project_id, experiment["id"]))


def test_a_hung_training_step_stops_the_heartbeat(services: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    run_dir = _run(services, project_id)
    ages: list[float | None] = []
    original = ClassificationModule.training_step

    def training_step(self: ClassificationModule, batch: Any, batch_idx: int) -> Any:
        if self.trainer.global_step == 1:
            ages.append(heartbeat_age_s(run_dir))  # progress so far kept it fresh
            time.sleep(callbacks_module.HEARTBEAT_INTERVAL_S * 2 + 0.5)  # a step stuck (say, in a collective)
            ages.append(heartbeat_age_s(run_dir))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationModule, "training_step", training_step)

    assert train_run(services.workspace, run_dir) == "completed"

    fresh, stale = ages
    assert fresh is not None and fresh < callbacks_module.HEARTBEAT_INTERVAL_S + 1.0
    assert stale is not None and stale >= callbacks_module.HEARTBEAT_INTERVAL_S * 2  # no thread kept it alive
    assert heartbeat_age_s(run_dir) < callbacks_module.HEARTBEAT_INTERVAL_S + 1.0  # progress resumed, so did it


def test_cache_decoding_beats_the_heartbeat_before_training_starts(services: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    run_dir = _run(services, project_id)
    beats: list[bool] = []
    original = callbacks_module.HeartbeatPacer.beat

    def beat(self: Any, force: bool = False, submit: Any = None) -> bool:
        beats.append(force)
        return original(self, force, submit)

    monkeypatch.setattr(callbacks_module.HeartbeatPacer, "beat", beat)
    started: list[int] = []
    original_start = RunFilesCallback.on_train_start

    def on_train_start(self: RunFilesCallback, trainer: Any, module: Any) -> None:
        started.append(len(beats))
        original_start(self, trainer, module)

    monkeypatch.setattr(RunFilesCallback, "on_train_start", on_train_start)
    assert train_run(services.workspace, run_dir) == "completed"

    assert beats[0] is True  # once at start, before any data is loaded
    facts = read_json(run_dir / "reproducibility.json")
    decoded = facts["num_train_images"] + facts["num_val_images"]
    assert facts["data_cache"] == "memory"
    assert len(started) == 1 and started[0] >= 1 + decoded  # then once per decoded image (rate-limited inside)


def test_the_stop_file_is_looked_at_on_a_clock_not_every_step(services: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    run_dir = _run(services, project_id)
    monkeypatch.setattr(callbacks_module, "STOP_CHECK_INTERVAL_S", 3600.0)
    original_end = RunFilesCallback.on_train_batch_end

    def on_train_batch_end(self: RunFilesCallback, trainer: Any, *args: Any) -> None:
        if trainer.global_step == 2:
            (self.run_dir / "stop.request").write_text("{}")  # after the first look: not seen within the interval
        original_end(self, trainer, *args)

    monkeypatch.setattr(RunFilesCallback, "on_train_batch_end", on_train_batch_end)
    assert train_run(services.workspace, run_dir) == "completed"

    run_dir = _run(services, project_id)
    monkeypatch.setattr(callbacks_module, "STOP_CHECK_INTERVAL_S", 0.0)
    assert train_run(services.workspace, run_dir) == "stopped"  # looked at every step: seen at once
