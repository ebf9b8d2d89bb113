"""Reproducibility (issue 12 item 9): ``hardware.cpu_threads`` fixes the training threads, and it is recorded."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from modelyard.core.errors import ValidationError
from modelyard.core.jsonio import read_json
from modelyard.core.training.config import DEFAULT_CPU_THREADS, parse_config
from modelyard.core.training.worker.engine import train_run
from modelyard.plugins.classification.module import ClassificationModule
from modelyard.core.training.run_folder import create_run_folder
from tests.conftest import TINY_TRAINING_CONFIG
from tests.helpers.datasets import create_project_with_dataset

_NAMES = itertools.count()


def _run(services: Any, project_id: str, config: dict[str, Any]) -> Path:
    experiment = services.experiments.create(project_id, f"threads-{next(_NAMES)}", config=config)
    return create_run_folder(services.workspace, project_id, experiment["id"],
                             services.experiments.run_config(project_id, experiment["id"]))


def test_cpu_threads_default_to_a_fixed_number_and_accept_auto() -> None:
    assert DEFAULT_CPU_THREADS == 1 and parse_config({}).hardware.cpu_threads == 1
    assert parse_config({"hardware": {"cpu_threads": "auto"}}).hardware.cpu_threads == "auto"
    assert parse_config({"hardware": {"cpu_threads": 4}}).hardware.cpu_threads == 4
    for bad in (0, "many", 1.5):
        with pytest.raises(ValidationError) as caught:
            parse_config({"hardware": {"cpu_threads": bad}})
        assert caught.value.field == "config.hardware.cpu_threads"


def test_the_same_config_gives_the_same_metrics_whatever_threads_the_calling_process_uses(
        services: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    config = {**TINY_TRAINING_CONFIG, "model": {"architecture": "simple_cnn", "dropout": 0.2}}
    during: list[int] = []
    original = ClassificationModule.training_step

    def training_step(self: ClassificationModule, batch: Any, batch_idx: int) -> Any:
        during.append(torch.get_num_threads())
        return original(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationModule, "training_step", training_step)
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):  # what `make demo` (OMP_NUM_THREADS=1) and a plain shell on 2 cores give
            monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
            torch.set_num_threads(threads)
            run_dir = _run(services, project_id, config)
            assert train_run(services.workspace, run_dir) == "completed"
            assert torch.get_num_threads() == threads and os.environ["OMP_NUM_THREADS"] == str(threads)  # put back
            runs.append(run_dir)
    finally:
        torch.set_num_threads(before)

    assert set(during) == {DEFAULT_CPU_THREADS}  # every step ran with the configured count
    first, second = (read_json(r / "metrics.json") for r in runs)
    drop = ("time_s", "images_per_s")
    assert [{k: v for k, v in m.items() if k not in drop} for m in first] == \
        [{k: v for k, v in m.items() if k not in drop} for m in second]
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reproducibility_json_records_threads_and_determinism_flags(services: Any) -> None:
    project_id = create_project_with_dataset(services, per_class=4, size=16)
    config = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 1, "scheduler": {"name": "none"}},
              "hardware": {"devices": ["cpu"], "cpu_threads": 2}}
    run_dir = _run(services, project_id, config)
    assert train_run(services.workspace, run_dir) == "completed"

    record = read_json(run_dir / "reproducibility.json")
    assert record["threads"]["cpu_threads"] == 2 and record["threads"]["intra_op"] == 2
    assert record["threads"]["omp_num_threads"] == "2" and record["threads"]["inter_op"] >= 1
    assert record["determinism"] == {"deterministic_algorithms": True, "deterministic_warn_only": True,
                                     "fill_uninitialized_memory": False, "cudnn_deterministic": False,
                                     "cudnn_benchmark": False}
