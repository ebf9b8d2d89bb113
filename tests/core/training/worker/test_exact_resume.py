"""Exact resume (issue 12 item 3): a run stopped or killed and resumed ends where the uninterrupted run ends.

Real engine, real Lightning, CPU: ``simple_cnn`` with dropout, random train
augmentations (flip, resized crop, rotation), a warm-up + cosine schedule.
The same config is trained once straight through and once with an
interruption; the final weights must agree to 1e-6 and the per-epoch records
(train/val loss and accuracy) must be equal.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from modelyard.core.jobs.folder import Claimant
from modelyard.core.jobs.kinds import TRAIN
from modelyard.core.jobs.spawn import cold_command
from modelyard.core.jsonio import read_json
from modelyard.core.training.worker import callbacks as callbacks_module
from modelyard.core.training.worker.callbacks import RunFilesCallback
from modelyard.core.training.worker.engine import train_run
from modelyard.core.training.checkpoints import usable_checkpoint
from modelyard.core.training.run_folder import create_run_folder, read_run, update_run
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.run_fixtures import wait_for

AUGMENTED = {
    "model": {"architecture": "simple_cnn", "dropout": 0.3},
    "data": {"image_size": [16, 16], "batch_size": 4, "num_workers": 0, "cache": "memory",
             "augmentations": {"train": [
                 {"name": "RandomHorizontalFlip", "params": {"p": 0.5}},
                 {"name": "RandomResizedCrop", "params": {"scale": [0.6, 1.0]}},
                 {"name": "RandomRotation", "params": {"degrees": 15}},
             ], "val": []}},
    "training": {"max_epochs": 3, "scheduler": {"name": "cosine", "warmup_epochs": 1}, "early_stopping": None,
                 "optimizer": {"name": "adamw", "lr": 0.01}},
    "hardware": {"devices": ["cpu"]},
}
RECORD_KEYS = ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "val/f1", "lr")
PARTIAL_EPOCH_WARNING = "resuming from a checkpoint that ended before the epoch ended"


_NAMES = itertools.count()


def _run_folder(services: Any, project_id: str, config: dict[str, Any]) -> Path:
    """A pending run of a new experiment, created as the API and the CLI create one."""
    experiment = services.experiments.create(project_id, f"exact-{next(_NAMES)}", config=config)
    return create_run_folder(services.workspace, project_id, experiment["id"],
                             services.experiments.run_config(project_id, experiment["id"]))


def _records(run_dir: Path) -> list[dict[str, Any]]:
    return [{k: r.get(k) for k in RECORD_KEYS} for r in read_json(run_dir / "metrics.json")]


def _weights(run_dir: Path, name: str = "last.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _stop_at_step(monkeypatch: pytest.MonkeyPatch, run_dir: Path, step: int) -> None:
    """Write ``stop.request`` (as POST .../stop does) when the fit reaches ``step``; the file is looked at every step."""
    monkeypatch.setattr(callbacks_module, "STOP_CHECK_INTERVAL_S", 0.0)
    original = RunFilesCallback.on_train_batch_end

    def on_train_batch_end(self: RunFilesCallback, trainer: Any, *args: Any) -> None:
        if trainer.global_step == step and self.run_dir == run_dir:
            (run_dir / "stop.request").write_text("{}")
        original(self, trainer, *args)

    monkeypatch.setattr(RunFilesCallback, "on_train_batch_end", on_train_batch_end)


def _resume(services: Any, project_id: str, run_dir: Path) -> list[warnings.WarningMessage]:
    """Resume the way the services do (stopped -> pending), train in process, return the warnings raised."""
    services.runs.resume_run(project_id, run_dir.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train_run(services.workspace, run_dir, resume=True) == "completed"
    return caught


@pytest.fixture
def project(services: Any) -> str:
    return create_project_with_dataset(services, per_class=8, size=16)  # 15 train images: 4 steps per epoch


@pytest.fixture
def straight(services: Any, project: str) -> Path:
    run_dir = _run_folder(services, project, AUGMENTED)
    assert train_run(services.workspace, run_dir) == "completed"
    return run_dir


@pytest.mark.parametrize("stop_step", [6, 4], ids=["mid-epoch", "epoch-boundary"])
def test_a_stopped_and_resumed_run_ends_with_the_weights_and_records_of_the_uninterrupted_run(
        services: Any, project: str, straight: Path, monkeypatch: pytest.MonkeyPatch, stop_step: int) -> None:
    steps_per_epoch = read_run(straight).progress.steps_per_epoch
    assert steps_per_epoch == 4
    run_dir = _run_folder(services, project, AUGMENTED)
    _stop_at_step(monkeypatch, run_dir, stop_step)

    assert train_run(services.workspace, run_dir) == "stopped"
    stopped_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert stopped_at == stop_step  # mid-epoch 2 (step 6 of 8), or the end of epoch 1
    monkeypatch.undo()
    caught = _resume(services, project, run_dir)

    assert not [w for w in caught if PARTIAL_EPOCH_WARNING in str(w.message)]
    assert _records(run_dir) == _records(straight)
    diff = max_abs_diff(_weights(run_dir), _weights(straight))
    print(f"max abs weight difference after resume at step {stop_step}: {diff}")
    assert diff <= 1e-6
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3 * steps_per_epoch


def test_the_resumed_epoch_reports_every_batch_of_it(services: Any, project: str, straight: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Stopped after the 1st of 4 steps of epoch 1: that epoch's train/loss must still cover all 15 images.
    run_dir = _run_folder(services, project, AUGMENTED)
    _stop_at_step(monkeypatch, run_dir, 1)
    assert train_run(services.workspace, run_dir) == "stopped"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["modelyard"]["train_sums"][0][2] == 4  # [loss * images, correct, images] of the one rank
    monkeypatch.undo()
    _resume(services, project, run_dir)
    assert _records(run_dir) == _records(straight)


def test_resume_state_in_checkpoints_is_plain_data_and_round_trips(services: Any, straight: Path) -> None:
    import random

    import numpy as np

    from modelyard.core.training.worker.rng_state import capture_rng_state, restore_rng_state

    saved = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)  # would raise on anything else
    rng = saved["callbacks"]["RngStateCallback"]["rng"]
    assert set(rng) >= {"python", "numpy", "torch"}
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 2, "batches": 4}]
    state = capture_rng_state()
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_a_sigkilled_worker_resumed_from_its_epoch_checkpoint_matches_the_uninterrupted_run(
        services: Any, project: str, straight: Path) -> None:
    run_dir = _run_folder(services, project, AUGMENTED)
    TRAIN.job(services.workspace, run_dir).claim(Claimant.this_process("server"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)
    worker = subprocess.Popen(cold_command(TRAIN, run_dir, services.workspace.root), cwd=run_dir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # last.ckpt appears (atomically) at the end of epoch 1: kill at once, somewhere in epoch 2
        last = run_dir / "checkpoints" / "last.ckpt"
        wait_for(last.exists, timeout=120, interval=0.01, what="last.ckpt of epoch 1")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    point = usable_checkpoint(run_dir / "checkpoints")
    assert point is not None and 1 <= point.epochs_done < 3
    update_run(services.workspace, run_dir, lambda r: r.with_fields(status="interrupted"))  # what the server records
    # had the kill come during a checkpoint save, its temp file would be left (as a Ray cluster test saw)
    (run_dir / "checkpoints" / ".tmp-last.ckpt.k1ll3d").write_bytes(b"half a checkpoint")

    _resume(services, project, run_dir)

    assert _records(run_dir) == _records(straight)
    assert max_abs_diff(_weights(run_dir), _weights(straight)) <= 1e-6
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_resume_with_loader_worker_processes_is_exact_too(services: Any, project: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = {**AUGMENTED, "data": {**AUGMENTED["data"], "num_workers": 2},
              "training": {**AUGMENTED["training"], "max_epochs": 2}}
    straight = _run_folder(services, project, config)
    assert train_run(services.workspace, straight) == "completed"
    run_dir = _run_folder(services, project, config)
    _stop_at_step(monkeypatch, run_dir, 5)
    assert train_run(services.workspace, run_dir) == "stopped"
    monkeypatch.undo()
    _resume(services, project, run_dir)
    assert _records(run_dir) == _records(straight)
    assert max_abs_diff(_weights(run_dir), _weights(straight)) <= 1e-6


def _worker(services: Any, run_dir: Path, stop: bool = False) -> subprocess.CompletedProcess[str]:
    """Claim the pending run as the server's queue does and run it in a cold job worker (rank 0 of DDP).

    ``stop``: a stop is requested once claimed (a claim clears older requests), before training starts.
    """
    TRAIN.job(services.workspace, run_dir).claim(Claimant.this_process("server"))
    if stop:
        (run_dir / "stop.request").write_text("{}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)
    return subprocess.run(cold_command(TRAIN, run_dir, services.workspace.root), cwd=run_dir, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_ddp_run_stopped_mid_epoch_resumes_each_ranks_shard_exactly(services: Any, project: str) -> None:
    # 15 train images over 2 ranks: shards of 8, 2 steps of batch 4 per epoch; the stop lands after step 1.
    config = {**AUGMENTED, "training": {**AUGMENTED["training"], "max_epochs": 2},
              "hardware": {"devices": ["cpu"], "num_processes": 2}}
    straight = _run_folder(services, project, config)
    result = _worker(services, straight)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = _run_folder(services, project, config)
    result = _worker(services, run_dir, stop=True)
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]  # stopped
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1

    services.runs.resume_run(project, run_dir.name)
    result = _worker(services, run_dir)  # the run record's resume entry makes it continue from last.ckpt

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert PARTIAL_EPOCH_WARNING not in result.stdout + result.stderr
    assert _records(run_dir) == _records(straight)
    assert max_abs_diff(_weights(run_dir), _weights(straight)) <= 1e-6


def test_a_stop_during_gradient_accumulation_waits_for_the_optimizer_step_and_resumes_exactly(
        services: Any, project: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # batch_multiplier 2: 4 batches per epoch, 2 optimizer steps. The stop arrives after the first batch of
    # epoch 2 (half an optimizer step accumulated); it is honoured after the second, so no gradient is dropped.
    config = {**AUGMENTED, "training": {**AUGMENTED["training"], "batch_multiplier": 2}}
    straight = _run_folder(services, project, config)
    assert train_run(services.workspace, straight) == "completed"
    run_dir = _run_folder(services, project, config)
    monkeypatch.setattr(callbacks_module, "STOP_CHECK_INTERVAL_S", 0.0)
    original = RunFilesCallback.on_train_batch_end

    def on_train_batch_end(self: RunFilesCallback, trainer: Any, module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 0:
            (self.run_dir / "stop.request").write_text("{}")
        original(self, trainer, module, outputs, batch, batch_idx)

    monkeypatch.setattr(RunFilesCallback, "on_train_batch_end", on_train_batch_end)
    assert train_run(services.workspace, run_dir) == "stopped"
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3 and saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 2}]  # epoch 2 (0-based 1): stopped after its first optimizer step, batch 2 of 4
    monkeypatch.undo()

    _resume(services, project, run_dir)

    assert _records(run_dir) == _records(straight)
    assert max_abs_diff(_weights(run_dir), _weights(straight)) <= 1e-6
