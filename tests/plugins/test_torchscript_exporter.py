"""``torchscript`` exporter: a real traced simple_cnn, loaded back with torch.jit.load, with its metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from modelyard.core import ExportMetadata
from modelyard.core.errors import ValidationError
from modelyard.plugins.simple_cnn import build_simple_cnn
from modelyard.plugins.torchscript_exporter import EXPORTER, read_metadata
from modelyard.testing import check_exporter, single_threaded

METADATA = ExportMetadata(
    classes=["0", "1", "2", "3"],
    input_size=(28, 28),
    mean=[0.5],
    std=[0.5],
    architecture="simple_cnn",
    run_id="run-a1b2c3d4",
    channels=1,
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_simple_cnn(4, in_channels=1)
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 1, 28, 28))
    return net.eval()


@pytest.mark.parametrize("freeze", [False, True])
def test_torchscript_export_matches_pytorch(model, tmp_path: Path, freeze: bool) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(2)
    batch = torch.randn(3, 1, 28, 28)
    with single_threaded():
        path = EXPORTER.export(model, batch[:1], {"freeze": freeze}, tmp_path, METADATA)
        got = EXPORTER.load_runner(path, {"freeze": freeze})(batch.numpy())
        with torch.no_grad():
            expected = model(batch).numpy()
    assert path == tmp_path / "model.pt"
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_torchscript_archive_carries_the_metadata(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with single_threaded():
        path = EXPORTER.export(model, torch.zeros(1, 1, 28, 28), {}, tmp_path, METADATA)
    assert read_metadata(path) == {
        "classes": ["0", "1", "2", "3"],
        "input_size": [28, 28],
        "mean": [0.5],
        "std": [0.5],
        "architecture": "simple_cnn",
        "run_id": "run-a1b2c3d4",
        "channels": 1,
        "extra": {},
    }


def test_torchscript_refuses_unknown_options(model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        EXPORTER.export(model, torch.zeros(1, 1, 28, 28), {"optimize": True}, tmp_path / "out", METADATA)
    assert caught.value.field == "options.optimize"
    assert not (tmp_path / "out").exists()


def test_torchscript_exporter_passes_the_plugin_author_contract_check(tmp_path: Path) -> None:
    path = check_exporter(EXPORTER, tmp_path, options={"freeze": True})
    assert path.suffix == ".pt"
