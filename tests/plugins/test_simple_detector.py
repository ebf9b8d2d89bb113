"""``simple_detector``: the ``DetectionNet`` contract, its exports, and that it really learns.

The network is checked the way the object_detection task uses it: losses in
training mode (also for images without boxes), sorted detections in eval
mode, and ``export_forward`` through ONNX (onnxruntime) and TorchScript
(trace and script) giving the boxes PyTorch gives on a real generated image.
A module-scoped fixture trains it for a few seconds on generated shapes.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.ops import box_iou

from modelyard.core.errors import ValidationError
from modelyard.core.models import parameter_count
from modelyard.core.plugin_manager import DEFAULT_PLUGINS, PluginHost
from modelyard.core.sample_data import generate_shapes_detection
from modelyard.plugins import simple_detector
from modelyard.testing import single_threaded

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def arch():  # type: ignore[no-untyped-def]
    host = PluginHost(disabled=set())
    host.add_plugin(simple_detector, name="simple_detector")
    return host.architectures.get("simple_detector")


def build(num_classes: int = 4, **options: Any) -> nn.Module:
    torch.manual_seed(0)
    return simple_detector.build_simple_detector(num_classes, **options)


def targets_for(*per_image: list[tuple[float, float, float, float, int]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([b[:4] for b in boxes], dtype=torch.float32).reshape(-1, 4),
             "labels": torch.tensor([b[4] for b in boxes], dtype=torch.int64)} for boxes in per_image]


def load_shapes(folder: Path) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Normalised images and 0-based targets of a ``generate_shapes_detection`` folder."""
    coco = json.loads((folder / "annotations.json").read_text(encoding="utf-8"))
    images = torch.from_numpy(np.stack([np.asarray(Image.open(folder / im["file_name"]).convert("RGB"))
                                        for im in coco["images"]])).permute(0, 3, 1, 2)
    per_image: dict[int, list[tuple[float, float, float, float, int]]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        per_image[ann["image_id"]].append((x, y, x + w, y + h, ann["category_id"] - 1))
    return (images.float() / 255 - MEAN) / STD, targets_for(*per_image.values())


class ExportForward(nn.Module):
    """What the exporters trace: ``forward`` is the network's ``export_forward``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.export_forward(images)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """simple_detector trained a few seconds on 96 generated 64 px canvases (eval mode); loss per epoch, held-out images."""
    folder = tmp_path_factory.mktemp("shapes-detection")
    generate_shapes_detection(folder, num_images=112, size=64, seed=5)
    images, targets = load_shapes(folder)
    train_x, train_t, test_x, test_t = images[:96], targets[:96], images[96:], targets[96:]
    net = build(4, image_size=(64, 64))
    optimizer = torch.optim.AdamW(net.parameters(), lr=4e-3)
    losses = []
    with single_threaded():
        torch.manual_seed(0)
        net.train()
        for _ in range(8):
            total = 0.0
            for begin in range(0, 96, 16):
                loss = sum(net(train_x[begin:begin + 16], train_t[begin:begin + 16]).values())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
            losses.append(total / 6)
    return {"net": net.eval(), "losses": losses, "test_x": test_x, "test_t": test_t}


# -- registration and options ------------------------------------------------------------------


def test_is_a_builtin_detection_architecture_next_to_simple_cnn(arch) -> None:  # type: ignore[no-untyped-def]
    assert DEFAULT_PLUGINS.index("modelyard.plugins.simple_detector") == DEFAULT_PLUGINS.index(
        "modelyard.plugins.simple_cnn") + 1
    assert arch.tasks == ("object_detection",) and not arch.has_pretrained
    assert arch.default_input_size == (96, 96) and arch.description
    assert 100_000 <= parameter_count(arch) <= 300_000  # counted on the meta device, 1000 classes


def test_refuses_pretrained_unknown_options_and_sizes_off_its_stride() -> None:
    cases = [({"pretrained": True}, "model.pretrained"), ({"depth": 3}, "model.depth"),
             ({"image_size": (96, 90)}, "data.image_size"), ({"image_size": (2, 2)}, "data.image_size"),
             ({"width": "wide"}, "model.width"), ({"width": 0}, "model.width"),
             ({"max_detections": 0}, "model.max_detections")]
    for kwargs, field in cases:
        with pytest.raises(ValidationError) as info:
            simple_detector.build_simple_detector(3, **kwargs)
        assert info.value.field == field, kwargs


def test_builds_for_one_channel_and_any_size_that_is_a_multiple_of_4() -> None:
    net = build(2, in_channels=1, image_size=(36, 100)).eval()
    with torch.no_grad():
        [out] = net(torch.randn(1, 1, 36, 100))
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) <= 100
    assert out["boxes"][:, 2].max() <= 100 and out["boxes"][:, 3].max() <= 36 and out["boxes"].min() >= 0
    assert set(out["labels"].tolist()) <= {0, 1}


# -- training mode -----------------------------------------------------------------------------


def test_training_mode_returns_finite_losses_that_reach_every_parameter() -> None:
    net = build(3, image_size=(64, 64)).train()
    targets = targets_for([(4, 6, 30, 20, 0), (40, 40, 63, 64, 2)], [], [(10, 10, 12.5, 13, 1)])
    losses = net(torch.randn(3, 3, 64, 64), targets)
    assert set(losses) == {"heatmap", "offset", "size"}
    assert all(value.ndim == 0 and torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


def test_a_batch_without_any_box_still_trains() -> None:
    net = build(3, image_size=(32, 32)).train()
    losses = net(torch.randn(2, 3, 32, 32), targets_for([], []))
    assert losses["offset"] == 0 and losses["size"] == 0 and losses["heatmap"] > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_training_mode_refuses_missing_targets_and_foreign_class_ids() -> None:
    net = build(3, image_size=(32, 32)).train()
    with pytest.raises(ValueError, match="targets"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="0..2"):
        net(torch.randn(1, 3, 32, 32), targets_for([(1, 1, 9, 9, 3)]))


# -- eval mode and decoding --------------------------------------------------------------------


def test_eval_mode_returns_scored_boxes_per_image_highest_first_and_deterministic() -> None:
    net = build(4, image_size=(64, 64)).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        first, second = net(x), net(x)
    assert len(first) == 3
    for out, again in zip(first, second, strict=True):
        assert set(out) == {"boxes", "scores", "labels"}
        k = len(out["scores"])
        assert 0 < k <= 100 and out["boxes"].shape == (k, 4) and out["labels"].shape == (k,)
        assert out["labels"].dtype == torch.int64 and out["boxes"].dtype == torch.float32
        assert torch.all(out["scores"][:-1] >= out["scores"][1:]) and torch.all(out["scores"] > 0)
        assert torch.all(out["boxes"][:, 2:] >= out["boxes"][:, :2])
        assert all(torch.equal(out[key], again[key]) for key in out)


def test_export_forward_is_the_eval_output_of_one_image() -> None:
    net = build(4, image_size=(64, 64), max_detections=7).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        [out] = net(x)
        boxes, scores, labels = net.export_forward(x)
    assert len(scores) <= 7
    assert torch.equal(boxes, out["boxes"]) and torch.equal(scores, out["scores"]) and torch.equal(labels, out["labels"])


# -- it learns ---------------------------------------------------------------------------------


def test_a_few_seconds_of_training_on_generated_shapes_cut_the_loss(trained) -> None:  # type: ignore[no-untyped-def]
    losses = trained["losses"]  # 8 epochs of 96 images (about 3 CPU-seconds); benchmarks/detection_plain.py trains fully
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < 0.4 * losses[0], losses


# -- exports -----------------------------------------------------------------------------------


def assert_same_detections(ours: tuple[Any, Any, Any], reference: tuple[torch.Tensor, ...], min_score: float = 0.1) -> None:
    """Same count above ``min_score``, same labels, IoU >= 0.99 pair by pair, scores within 1e-4."""
    boxes, scores, labels = (torch.as_tensor(np.asarray(v)) for v in ours)
    ref_boxes, ref_scores, ref_labels = reference
    keep, ref_keep = scores > min_score, ref_scores > min_score
    assert int(keep.sum()) == int(ref_keep.sum()) > 0
    assert torch.equal(labels[keep], ref_labels[ref_keep])
    assert torch.allclose(scores[keep], ref_scores[ref_keep], atol=1e-4)
    assert box_iou(boxes[keep], ref_boxes[ref_keep]).diagonal().min() >= 0.99


def test_export_forward_exports_to_onnx_with_a_dynamic_box_count(trained) -> None:  # type: ignore[no-untyped-def]
    net, image = trained["net"], trained["test_x"][:1]
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        reference = net.export_forward(image)
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer notices
        torch.onnx.export(ExportForward(net).eval(), (image,), buffer, dynamo=False, input_names=["input"],
                          output_names=["boxes", "scores", "labels"], opset_version=17)
    assert not net.training
    proto = onnx.load_from_string(buffer.getvalue())
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels"]
    assert all(o.type.tensor_type.shape.dim[0].dim_param for o in proto.graph.output)  # K is symbolic
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    assert_same_detections(session.run(None, {"input": image.numpy()}), reference)
    other = trained["test_x"][1:2]
    with torch.no_grad():
        assert_same_detections(session.run(None, {"input": other.numpy()}), net.export_forward(other))


def test_export_forward_traces_and_scripts_for_torchscript(trained) -> None:  # type: ignore[no-untyped-def]
    net, image = trained["net"], trained["test_x"][:1]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; the exporter still uses it
        reference = net.export_forward(image)
        traced = torch.jit.trace(ExportForward(net).eval(), (image,))
        scripted = torch.jit.script(net)
        scripted_wrapper = torch.jit.script(ExportForward(net).eval())
        for module in (traced, scripted_wrapper):
            buffer = io.BytesIO()
            torch.jit.save(module, buffer)
            buffer.seek(0)
            assert_same_detections(torch.jit.load(buffer)(image), reference)
        assert_same_detections(scripted.export_forward(image), reference)
