"""Extending a run (issue 12 item 4): a resume with a larger ``max_epochs`` continues the learning rate, no jump.

The rule (``module.planned_factor_fn``): from the resume step, cosine and
onecycle anneal from the current factor to their end value at the new total;
a warm-up in progress finishes as planned and is not repeated.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from modelyard.core.jsonio import read_json
from modelyard.core.training.worker import callbacks as callbacks_module
from modelyard.core.training.worker.callbacks import RunFilesCallback
from modelyard.core.training.worker.engine import train_run
from modelyard.core.training.worker.module import lr_factor_fn, planned_factor_fn
from modelyard.plugins.classification.module import ClassificationModule
from modelyard.core.training.run_folder import create_run_folder
from tests.helpers.datasets import create_project_with_dataset

LR = 0.01
COSINE = {"name": "cosine", "warmup_epochs": 1}
_NAMES = itertools.count()


# -- the plan as a function ------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", [COSINE, {"name": "onecycle", "warmup_epochs": 0}, {"name": "cosine"}])
def test_a_replanned_schedule_continues_from_the_current_factor_and_ends_at_the_new_total(scheduler: dict) -> None:
    old = lr_factor_fn(scheduler, 40, 10)
    new = planned_factor_fn(scheduler, 40, 10, [(25, 80)])
    assert [new(t) for t in range(25)] == [old(t) for t in range(25)]  # the past is the past
    assert new(25) == pytest.approx(old(25), abs=1e-12)  # no jump at the resume step
    assert abs(new(26) - new(25)) < abs(old(26) - old(25))  # the rest of the anneal is spread over more steps
    end = 0.0 if scheduler["name"] == "cosine" else old(39)
    last = 80 if scheduler["name"] == "cosine" else 79
    assert new(last) == pytest.approx(end, abs=1e-12) and all(new(t) >= new(t + 1) - 1e-12 for t in range(25, 80))


def test_a_warmup_in_progress_finishes_as_planned_and_is_not_repeated() -> None:
    old = lr_factor_fn(COSINE, 40, 10)  # warm-up: steps 0-9
    new = planned_factor_fn(COSINE, 40, 10, [(4, 80)])
    assert [new(t) for t in range(11)] == [old(t) for t in range(11)]  # rises to 1.0 at step 10 exactly as before
    assert new(10) == 1.0 and new(80) == pytest.approx(0.0, abs=1e-12)
    assert new(45) == pytest.approx(0.5, abs=1e-9)  # cosine midway between 10 and 80


def test_a_run_extended_twice_replans_from_its_actual_curve() -> None:
    once = planned_factor_fn(COSINE, 40, 10, [(30, 60)])
    twice = planned_factor_fn(COSINE, 40, 10, [(30, 60), (50, 100)])
    assert [twice(t) for t in range(50)] == [once(t) for t in range(50)]
    assert twice(50) == pytest.approx(once(50), abs=1e-12) and twice(100) == pytest.approx(0.0, abs=1e-12)


def test_epoch_based_schedules_do_not_change_when_a_run_is_extended() -> None:
    step = {"name": "step", "step_size": 2, "gamma": 0.5, "warmup_epochs": 1}
    old, new = lr_factor_fn(step, 40, 10), planned_factor_fn(step, 40, 10, [(25, 80)])
    assert [new(t) for t in range(80)] == [old(t) for t in range(80)]


# -- through the engine ----------------------------------------------------------------------


def _lrs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """(global step, lr) of every training step from now on."""
    seen: list[tuple[int, float]] = []
    original = ClassificationModule.training_step

    def training_step(self: ClassificationModule, batch: Any, batch_idx: int) -> Any:
        seen.append((self.trainer.global_step, float(self.trainer.optimizers[0].param_groups[0]["lr"])))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationModule, "training_step", training_step)
    return seen


def _stop_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    monkeypatch.setattr(callbacks_module, "STOP_CHECK_INTERVAL_S", 0.0)
    original = RunFilesCallback.on_train_batch_end

    def on_train_batch_end(self: RunFilesCallback, trainer: Any, *args: Any) -> None:
        if trainer.global_step == step:
            (self.run_dir / "stop.request").write_text("{}")
        original(self, trainer, *args)

    monkeypatch.setattr(RunFilesCallback, "on_train_batch_end", on_train_batch_end)


@pytest.mark.parametrize("stop_step", [14, 3], ids=["after-warmup", "during-warmup"])
def test_resuming_with_more_epochs_continues_the_learning_rate_without_a_jump(
        services: Any, monkeypatch: pytest.MonkeyPatch, stop_step: int) -> None:
    project_id = create_project_with_dataset(services, per_class=8, size=16)  # 15 train images
    config = {"model": {"architecture": "simple_cnn"},
              "data": {"image_size": [16, 16], "batch_size": 2, "num_workers": 0},  # 8 steps per epoch
              "training": {"max_epochs": 2, "scheduler": COSINE, "early_stopping": None,
                           "optimizer": {"name": "adamw", "lr": LR}},
              "hardware": {"devices": ["cpu"]}}
    experiment = services.experiments.create(project_id, f"extend-{next(_NAMES)}", config=config)
    run_dir: Path = create_run_folder(services.workspace, project_id, experiment["id"],
                                      services.experiments.run_config(project_id, experiment["id"]))
    before = _lrs(monkeypatch)
    _stop_at(monkeypatch, stop_step)
    assert train_run(services.workspace, run_dir) == "stopped"
    monkeypatch.undo()

    resumed = services.runs.resume_run(project_id, run_dir.name, max_epochs=4)
    assert resumed.resumes[-1].max_epochs == 4
    after = _lrs(monkeypatch)
    assert train_run(services.workspace, run_dir, resume=True) == "completed"

    old = lr_factor_fn(COSINE, 16, 8)
    assert [s for s, _ in before] == list(range(stop_step)) and after[0][0] == stop_step
    last_before, first_after = before[-1][1], after[0][1]
    assert first_after == pytest.approx(LR * old(stop_step), rel=1e-6)  # where the first plan was at this step
    biggest_step_change = max(abs(old(t + 1) - old(t)) for t in range(16)) * LR
    assert abs(first_after - last_before) <= biggest_step_change + 1e-12
    naive = lr_factor_fn(COSINE, 32, 8)  # what rebuilding the schedule for 4 epochs would give at this step
    if stop_step >= 8:
        assert abs(LR * naive(stop_step) - last_before) > 2 * biggest_step_change  # the jump this avoids
    start = max(stop_step, 8)
    for step, lr in after:  # then the re-planned curve: warm-up as planned, cosine from there to 0 at step 32
        expected = old(step) if step < start else 0.5 * old(start) * (1 + math.cos(math.pi * (step - start) / (32 - start)))
        assert lr == pytest.approx(LR * expected, rel=1e-6, abs=1e-12)
    assert after[-1][0] == 31
    final = read_json(run_dir / "metrics.json")[-1]
    assert final["epoch"] == 4 and final["lr"] == pytest.approx(0.0, abs=1e-12)  # ends at the schedule's end
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["modelyard"]
    assert saved["planned_total"] == 16 and saved["replans"] == [[stop_step, 32]]
