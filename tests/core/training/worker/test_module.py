"""The task LightningModule's learning-rate schedules (core/training/worker/module.py)."""

from __future__ import annotations

import pytest
import torch

from modelyard.core.training.worker.module import lr_factor_fn
from modelyard.plugins.classification.module import ClassificationModule
from modelyard.plugins.simple_cnn import build_simple_cnn

TOTAL, PER_EPOCH = 100, 10


def factors(**scheduler: object) -> list[float]:
    fn = lr_factor_fn({"name": "none", **scheduler}, TOTAL, PER_EPOCH)
    return [fn(step) for step in range(TOTAL)]


def test_linear_warmup_rises_to_the_base_lr_then_hands_over() -> None:
    f = factors(name="none", warmup_epochs=2)
    assert f[0] < f[10] < f[19] < 1.0
    assert all(x == 1.0 for x in f[20:])


def test_cosine_decays_from_one_towards_zero() -> None:
    f = factors(name="cosine")
    assert f[0] == pytest.approx(1.0) and f[50] == pytest.approx(0.5, abs=0.02) and f[-1] < 0.01
    assert all(a >= b for a, b in zip(f, f[1:], strict=False))


def test_step_and_multistep_multiply_by_gamma_at_epoch_boundaries() -> None:
    step = factors(name="step", step_size=3, gamma=0.5)
    assert step[29] == 1.0 and step[30] == 0.5 and step[60] == 0.25
    multi = factors(name="multistep", milestones=[2, 5], gamma=0.1)
    assert multi[19] == 1.0 and multi[20] == pytest.approx(0.1) and multi[50] == pytest.approx(0.01)


def test_onecycle_peaks_at_the_end_of_warmup_and_ends_far_below_the_start() -> None:
    f = factors(name="onecycle", warmup_epochs=3)
    assert max(range(TOTAL), key=f.__getitem__) == 30
    assert f[0] == pytest.approx(1 / 25) and f[-1] < f[0] / 100


def test_uint8_batches_are_normalised_on_the_device_side() -> None:
    config = {"training": {"loss": {"label_smoothing": 0.0}}}
    module = ClassificationModule(build_simple_cnn(2), num_classes=2, class_names=["a", "b"], config=config,
                                  mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    images = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    out, labels = module.on_after_batch_transfer((images, torch.tensor([1])), 0)
    assert out.dtype == torch.float32 and torch.allclose(out, torch.full_like(out, 2.0))
    assert labels.tolist() == [1]
    assert set(module.state_dict()) == {f"net.{k}" for k in module.net.state_dict()}


def test_epoch_train_loss_and_acc_cover_every_image_once_with_an_uneven_last_batch() -> None:
    import lightning as L
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    config = {"training": {"loss": {"label_smoothing": 0.0}, "optimizer": {"name": "sgd", "lr": 0.0, "momentum": 0.0,
                                                                        "weight_decay": 0.0},
                           "scheduler": {"name": "none"}}}
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))  # lr 0: the same weights score every batch
    module = ClassificationModule(net, num_classes=2, class_names=["a", "b"], config=config,
                                  mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    labels = torch.randint(0, 2, (10,))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(TensorDataset(images, labels), batch_size=4))  # batches of 4, 4, 2

    with torch.no_grad():
        logits = net(module.on_after_batch_transfer((images, labels), 0)[0])
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(float(F.cross_entropy(logits, labels)),
                                                                          rel=1e-5)
    expected_acc = float((logits.argmax(dim=1) == labels).float().mean())
    assert float(trainer.callback_metrics["train/acc"]) == pytest.approx(expected_acc)
