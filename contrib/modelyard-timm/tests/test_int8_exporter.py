"""``onnx_int8`` on its own: modelyard's exporter contract, the file it writes, its README lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modelyard.core import METADATA_KEYS, ExportMetadata
from modelyard.testing import check_exporter
from modelyard_timm.int8 import EXPORTER, FILE_NAME, QUANTIZATION_KEY, VERIFICATION, usage_snippet


def test_it_declares_a_lossy_policy_on_top_of_the_onnx_format() -> None:
    assert EXPORTER.base_format == "onnx" and EXPORTER.extension == ".int8.onnx"
    assert VERIFICATION.lossy is True and VERIFICATION.min_top1_agreement == 0.95
    assert EXPORTER.tasks == ("classification",)


@pytest.mark.parametrize("options", [{}, {"per_channel": True, "reduce_range": True, "opset_version": 13}])
def test_it_passes_check_exporter_on_the_installed_onnx_base(host, tmp_path: Path, options: dict) -> None:
    path = check_exporter(host.exporters.get("onnx_int8"), tmp_path, options=options, input_size=(32, 32))
    assert path.name == FILE_NAME


def test_a_timm_network_quantises_to_a_quarter_of_its_size_and_keeps_its_metadata(host, tmp_path: Path) -> None:
    """The int8 file of a real timm network: int8 weights, a quarter of the size, the base's modelyard.* metadata."""
    import onnx

    torch.manual_seed(0)
    net = host.architectures.get("timm_mobilenetv3_large_100").build(3)
    path = check_exporter(host.exporters.get("onnx_int8"), tmp_path, model=net, input_size=(32, 32))
    base = next((tmp_path / "export-onnx_int8" / "base").glob("*.onnx"))
    assert path.stat().st_size < 0.35 * base.stat().st_size
    proto = onnx.load(str(path))
    props = {entry.key: entry.value for entry in proto.metadata_props}
    assert set(METADATA_KEYS.values()) <= set(props)
    assert json.loads(props[QUANTIZATION_KEY])["weights"] == "int8"
    assert any(init.data_type == onnx.TensorProto.INT8 for init in proto.graph.initializer)


def test_its_usage_snippet_runs_the_file_as_the_bundle_readme_says(host, tmp_path: Path) -> None:
    """The README's lines, executed: ``x`` in (one preprocessed image), ``outputs`` out, equal to the runner's."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3)).eval()
    base_dir = tmp_path / "base"
    metadata = ExportMetadata(classes=["a", "b", "c"], input_size=(16, 16), mean=[0.5] * 3, std=[0.25] * 3,
                              architecture="tiny", run_id="run-00000000")
    onnx_exporter = host_with_onnx().exporters.get("onnx")
    base = onnx_exporter.export(net, torch.zeros(1, 3, 16, 16), {}, base_dir, metadata)
    path = EXPORTER.export(net, torch.zeros(1, 3, 16, 16), {}, tmp_path / "int8", metadata, base_file=base)
    x = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    # the snippet runs as a user runs it: a script of its own in a fresh interpreter
    script = "import numpy as np\nx = np.load('x.npy')\n" + usage_snippet(str(path)) + \
        "\n(logits,) = outputs\nnp.save('logits.npy', logits)\n"
    (tmp_path / "run.py").write_text(script, encoding="utf-8")
    done = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    logits = np.load(tmp_path / "logits.npy")
    np.testing.assert_allclose(logits, EXPORTER.load_runner(path, {})(x[None]), rtol=0, atol=0)


def host_with_onnx():  # type: ignore[no-untyped-def]
    from modelyard.core.plugin_manager import PluginHost

    return PluginHost(disabled=set()).load_all()
