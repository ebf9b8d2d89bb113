"""Loading a run's checkpoint for evaluation, export and prediction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelyard.core.services import Services
from modelyard.core.training import checkpoints
from modelyard.core.training.checkpoints import load_checkpoint, load_trained_model
from tests.conftest import TrainedRun


def _logits(services: Services, run: TrainedRun) -> torch.Tensor:
    trained = load_trained_model(services.workspace, run.project_id, run.run_id, "best",
                                 experiment_id=run.experiment_id, plugins=services.plugins)
    with torch.inference_mode():
        return trained.net(torch.linspace(-1, 1, 4 * 3 * 16 * 16).reshape(4, 3, 16, 16))


def test_the_network_holds_exactly_the_checkpoints_weights(services: Services, trained_run: TrainedRun) -> None:
    trained = load_trained_model(services.workspace, trained_run.project_id, trained_run.run_id, "best",
                                 experiment_id=trained_run.experiment_id, plugins=services.plugins)
    saved = load_checkpoint(trained_run.run_dir / "checkpoints" / "best.ckpt")["state_dict"]
    loaded = trained.module.state_dict()
    assert set(loaded) == set(saved)
    for key, tensor in saved.items():
        assert torch.equal(loaded[key], tensor), key
    assert not any(t.is_meta for t in trained.module.parameters())
    assert not trained.module.training


def _spy_on_builds(monkeypatch: pytest.MonkeyPatch, computed_buffer: bool) -> list[str]:
    """The devices the network is built on; with ``computed_buffer`` it keeps a tensor outside its state dict."""
    original = checkpoints._built_from_weights
    calls: list[str] = []

    def spied(build_net, state_dict, path):  # type: ignore[no-untyped-def]
        def build_and_record(on: str) -> nn.Module:
            calls.append(on)
            net = build_net(on)
            if computed_buffer:
                with torch.device(on):
                    net.register_buffer("computed", torch.ones(2), persistent=False)
            return net

        return original(build_and_record, state_dict, path)

    monkeypatch.setattr(checkpoints, "_built_from_weights", spied)
    return calls


def test_a_network_is_built_on_the_meta_device_and_adopts_the_checkpoint_weights(
    services: Services, trained_run: TrainedRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_on_builds(monkeypatch, computed_buffer=False)
    _logits(services, trained_run)
    assert calls == ["meta"]


def test_an_architecture_that_cannot_be_built_on_meta_is_built_normally(
    services: Services, trained_run: TrainedRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network that computes a tensor at build time outside its state dict must not be left on ``meta``."""
    expected = _logits(services, trained_run)
    calls = _spy_on_builds(monkeypatch, computed_buffer=True)
    assert torch.equal(_logits(services, trained_run), expected)
    assert calls == ["meta", "cpu"]


def test_a_checkpoint_that_does_not_fit_its_architecture_is_refused(services: Services, trained_run: TrainedRun) -> None:
    from modelyard.core.errors import CheckpointError

    path = trained_run.run_dir / "checkpoints" / "best.ckpt"
    data = load_checkpoint(path)
    data["state_dict"] = {k: (nn.Parameter(torch.zeros(1)) if i == 0 else v)
                          for i, (k, v) in enumerate(data["state_dict"].items())}
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="does not fit its own architecture"):
        _logits(services, trained_run)
