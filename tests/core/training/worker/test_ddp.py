"""DDP correctness (issue 12 item 6): real CPU DDP over gloo through the job worker, and the per-rank data shards."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from modelyard.core.jobs.folder import Claimant
from modelyard.core.jobs.kinds import TRAIN
from modelyard.core.jobs.spawn import cold_command
from modelyard.core.jsonio import atomic_write_json, read_json
from modelyard.core.training.config import parse_config
from modelyard.core.training.worker.data import ImageDataModule
from modelyard.plugins.classification import CLASSIFICATION
from modelyard.plugins.classification.runtime import PAD_LABEL, ClassificationRuntime
from modelyard.core.training.run_folder import create_run_folder, read_run
from tests.conftest import TINY_TRAINING_CONFIG
from tests.helpers.datasets import create_project_with_dataset, write_shapes_dataset

DDP = {**TINY_TRAINING_CONFIG, "training": {"max_epochs": 2, "scheduler": {"name": "none"}, "early_stopping": None},
       "hardware": {"devices": ["cpu"], "num_processes": 2}}


def _keep_one_val_image(services: Any, project_id: str) -> None:
    """Move every validation image but one to train."""
    path = services.workspace.dataset_json(project_id)
    dataset = read_json(path)
    val = [image for image in dataset["images"] if image["split"][0] == "val"]
    for image in val[1:]:
        image["split"][0] = "train"
    atomic_write_json(path, dataset)


def _train_in_worker(services: Any, project_id: str, config: dict[str, Any]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    experiment = services.experiments.create(project_id, "ddp", config=config)
    run_dir = create_run_folder(services.workspace, project_id, experiment["id"],
                                services.experiments.run_config(project_id, experiment["id"]))
    TRAIN.job(services.workspace, run_dir).claim(Claimant.this_process("server"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(cold_command(TRAIN, run_dir, services.workspace.root), cwd=run_dir, env=env,
                            capture_output=True, text=True, timeout=240)
    return run_dir, result


def test_cpu_ddp_with_two_processes_and_one_validation_image_completes(services: Any) -> None:
    # Rank 1's validation shard is empty: it validates one masked padding item instead of skipping validation
    # while rank 0 waits for it in the metric reductions (the hang this replaces).
    project_id = create_project_with_dataset(services, per_class=6, size=16)
    _keep_one_val_image(services, project_id)

    run_dir, result = _train_in_worker(services, project_id, DDP)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert read_run(run_dir).status == "completed"
    assert read_json(run_dir / "reproducibility.json")["num_val_images"] == 1
    metrics = read_json(run_dir / "metrics.json")
    assert [m["epoch"] for m in metrics] == [1, 2]
    for record in metrics:  # one image: right or wrong, never counted twice or padded in
        assert record["val/acc"] in (0.0, 1.0) and record["val/loss"] > 0
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()


def _module(tmp_path: Path, rank: int, world: int, calls: list[int], train_aug: list[dict] | None = None) -> ImageDataModule:
    project = tmp_path / "p"
    if not (project / "dataset").exists():
        write_shapes_dataset(project, per_class=5, size=16)  # 9 train, 3 val images
    dataset = read_json(project / "dataset" / "dataset.json")
    config = parse_config({"data": {"image_size": [16, 16], "batch_size": 4, "cache": "memory", "num_workers": 0,
                                    "augmentations": {"train": train_aug or [], "val": []}}})
    return ImageDataModule(project / "dataset" / "images", dataset, config, ClassificationRuntime(CLASSIFICATION), rank=rank, world=world,
                           on_progress=lambda: calls.append(rank))


def test_each_rank_decodes_and_caches_only_its_own_shard(tmp_path: Path) -> None:
    calls: list[int] = []
    ranks = [_module(tmp_path, rank, 2, calls) for rank in range(2)]
    for module in ranks:
        module.setup("fit")
    n_train, n_val = len(ranks[0].train_items), len(ranks[0].val_items)  # 9 and 3

    per_rank_train = [len(m.train_set.paths) for m in ranks]
    per_rank_val = [len(m.val_set.paths) for m in ranks]
    assert per_rank_train == [(n_train + 1) // 2] * 2  # equal shards: the same number of steps on every rank
    assert per_rank_val == [2, 1] and sum(per_rank_val) == n_val  # every val image once
    assert [m.train_set.cached.shape[0] for m in ranks] == per_rank_train  # cache holds the shard only
    assert calls.count(0) == per_rank_train[0] + per_rank_val[0] and calls.count(1) == per_rank_train[1] + per_rank_val[1]
    covered = {p.name for m in ranks for p in m.train_set.paths}
    assert covered == {name for name, _ in ranks[0].train_items}  # together they cover the train subset
    assert len(ranks[0].val_set) == len(ranks[1].val_set) == 2  # rank 1 padded with one masked item
    images, labels = ranks[1].val_set.__getitems__([0, 1])
    assert labels.tolist()[1] == PAD_LABEL and int(images[1].sum()) == 0


def test_the_train_order_of_a_rank_depends_on_seed_and_epoch_only(tmp_path: Path) -> None:
    module = _module(tmp_path, 0, 1, [])
    module.setup("fit")
    first = [key for batch in module.train_dataloader().batch_sampler for key in batch]
    again = [key for batch in module.train_dataloader().batch_sampler for key in batch]
    loader = module.train_dataloader()
    loader.batch_sampler.sampler.set_epoch(1)
    next_epoch = [key for batch in loader.batch_sampler for key in batch]
    assert first == again and {e for e, _ in first} == {0} and {e for e, _ in next_epoch} == {1}
    assert sorted(i for _, i in first) == sorted(i for _, i in next_epoch) == list(range(9))
    assert [i for _, i in first] != [i for _, i in next_epoch]
    loader.load_state_dict({"epoch": 1, "batches": 1})  # resume after the first batch of epoch 1
    assert [key for batch in loader.batch_sampler for key in batch] == next_epoch[4:]


@pytest.mark.parametrize("flip", [True, False])
def test_an_images_augmentation_depends_on_seed_epoch_and_image_only(tmp_path: Path, flip: bool) -> None:
    module = _module(tmp_path, 0, 1, [], [{"name": "RandomResizedCrop", "params": {"scale": [0.3, 1.0]}}])
    module.setup("fit")
    keys = [(1, 0), (1, 3), (2, 3)]
    a, _ = module.train_set.__getitems__(keys)
    torch.manual_seed(1234) if flip else torch.rand(100)  # whatever the global RNG did meanwhile
    before = torch.get_rng_state()
    b, _ = module.train_set.__getitems__(keys)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), before)  # and it is left as it was (dropout draws from it)
    assert not torch.equal(b[1], b[2])  # another epoch, another crop
