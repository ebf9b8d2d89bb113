"""Run-folder writers (core/training/worker/callbacks.py): atomic checkpoint IO and the heartbeat."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest
import torch

from modelyard.core.training.worker.callbacks import AtomicCheckpointIO, HeartbeatPacer, best_record
from modelyard.core.training.run_folder import heartbeat_age_s
from tests.helpers.evil import write_evil_pickle


def test_checkpoint_is_written_whole_and_leaves_no_temp_file(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, target)
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
    loaded = io.load_checkpoint(target)
    assert loaded["epoch"] == 2 and torch.equal(loaded["state_dict"]["w"], torch.zeros(3))


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, target)
    with pytest.raises(Exception):
        io.save_checkpoint({"epoch": 2, "bad": lambda: None}, target)  # cannot be pickled
    assert io.load_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_loading_never_runs_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_evil_pickle(tmp_path / "evil.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)  # asking for unsafe loading changes nothing
    assert not marker.exists()


def test_heartbeat_is_written_when_called_at_most_once_per_interval(tmp_path: Path) -> None:
    now = [100.0]
    beat = HeartbeatPacer(tmp_path, interval_s=2.0, clock=lambda: now[0])
    written = [beat.beat()]
    now[0] += 1.9
    written.append(beat.beat())  # too soon
    now[0] += 0.2
    written.append(beat.beat())
    written.append(beat.beat(force=True))
    assert written == [True, False, True, True]
    assert heartbeat_age_s(tmp_path) is not None and heartbeat_age_s(tmp_path) < 1.0


def test_heartbeat_goes_stale_when_nothing_calls_it(tmp_path: Path) -> None:
    beat = HeartbeatPacer(tmp_path, interval_s=0.05)
    beat.beat()
    time.sleep(0.3)  # no thread keeps it fresh: a stuck worker looks stuck
    assert heartbeat_age_s(tmp_path) >= 0.25


def test_best_record_follows_the_monitor_direction() -> None:
    records = [{"epoch": 1, "val/loss": 0.5, "val/acc": 0.7}, {"epoch": 2, "val/loss": 0.4, "val/acc": 0.6}]
    assert best_record(records, "val/loss", "min")["epoch"] == 2
    assert best_record(records, "val/acc", "max")["epoch"] == 1
    assert best_record([], "val/loss", "min") is None
