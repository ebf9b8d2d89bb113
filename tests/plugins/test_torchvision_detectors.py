"""torchvision detectors: the DetectionNet contract for every one, ONNX export, pretrained COCO weights offline.

Every detector is built once (module fixture) at a small size, 128 px (SSD300
needs 268 px and gets 272), without weights, and runs one training step and
one evaluation. Faster R-CNN keeps fewer region proposals than torchvision
does (``_few_proposals``): the same code runs, on 2 cores in a fraction of
the time. ONNX exports of the four smaller models run by default; the
ResNet-50, SSD300 and full-size MobileNet exports (each 100-170 MB, 5-15 s)
carry ``slow_models`` and run with ``MODELYARD_ALL_MODELS=1``.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.ops import box_iou

from modelyard.core import weights_cache_file
from modelyard.core.errors import ValidationError
from modelyard.core.plugin_manager import DEFAULT_PLUGINS, PluginHost
from modelyard.core.registry import ArchitectureRegistry
from modelyard.plugins import torchvision_detectors
from modelyard.plugins.torchvision_detectors import DETECTORS, IMAGENET_MEAN, IMAGENET_STD, SCORE_THRESHOLD, default_weights
from modelyard.testing import single_threaded

NUM_CLASSES = 3
ALL_MODELS = os.environ.get("MODELYARD_ALL_MODELS") == "1"
#: exported and compared in every run; the others with MODELYARD_ALL_MODELS=1
EXPORTED_BY_DEFAULT = (
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
    "ssdlite320_mobilenet_v3_large",
)
#: how the ONNX files are written (what an exporter of these models must use)
ONNX_EXPORT_ARGS: dict[str, Any] = {"dynamo": False, "opset_version": 17, "do_constant_folding": True}


def _size(name: str) -> tuple[int, int]:
    return (272, 272) if name == "ssd300_vgg16" else (128, 128)


@pytest.fixture(scope="module")
def registry() -> ArchitectureRegistry:
    host = PluginHost(disabled=set())
    host.add_plugin(torchvision_detectors, name="torchvision_detectors")
    return host.architectures


def _few_proposals(net: nn.Module) -> nn.Module:
    """Faster R-CNN with 150/100 region proposals and 64 sampled RoIs instead of 2000/1000 and 512 (test speed only)."""
    rpn = getattr(net.model, "rpn", None)
    if rpn is not None:
        rpn._pre_nms_top_n = {"training": 150, "testing": 150}
        rpn._post_nms_top_n = {"training": 100, "testing": 100}
        net.model.roi_heads.fg_bg_sampler.batch_size_per_image = 64
    return net


_built: dict[str, nn.Module] = {}


def built(registry: ArchitectureRegistry, name: str) -> nn.Module:
    """``name`` built once for 3 classes at its test size, without weights."""
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = _few_proposals(registry.get(name).build(NUM_CLASSES, image_size=_size(name)))
    return _built[name]


def scene(size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A normalised image with three filled rectangles on noise, and their boxes (classes 0, 1, 2)."""
    generator = torch.Generator().manual_seed(seed)
    h, w = size
    image = torch.rand(3, h, w, generator=generator) * 0.3
    boxes = torch.tensor([[0.10, 0.15, 0.45, 0.55], [0.50, 0.20, 0.90, 0.50], [0.30, 0.60, 0.80, 0.95]]) * torch.tensor(
        [w, h, w, h]
    )
    for index, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
        image[index, y1:y2, x1:x2] = 0.9
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return (image - mean) / std, {"boxes": boxes, "labels": torch.tensor([0, 1, 2])}


# -- registration ------------------------------------------------------------------------
def test_every_torchvision_detector_is_registered_for_object_detection(registry: ArchitectureRegistry) -> None:
    assert set(registry.names()) == set(DETECTORS) == {
        "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
        "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
        "fcos_resnet50_fpn", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large",
    }  # fmt: skip
    for name in registry.names():
        arch = registry.get(name)
        assert arch.tasks == ("object_detection",) and arch.has_pretrained and arch.head_name
        assert arch.num_parameters == default_weights(name).meta["num_params"]
        assert "COCO box mAP" in arch.description
    assert registry.get("fasterrcnn_resnet50_fpn").default_input_size == (640, 640)
    assert registry.get("fasterrcnn_mobilenet_v3_large_320_fpn").default_input_size == (320, 320)
    assert registry.get("ssdlite320_mobilenet_v3_large").default_input_size == (320, 320)
    assert registry.get("ssd300_vgg16").default_input_size == (300, 300)


def test_the_detectors_load_as_a_built_in_plugin_after_the_classifiers() -> None:
    names = [module.rsplit(".", 1)[-1] for module in DEFAULT_PLUGINS]
    assert names.index("torchvision_detectors") == names.index("torchvision_models") + 1


def test_registration_builds_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("registration must not build models")

    monkeypatch.setattr(tvm, "get_model", forbidden)
    fresh = ArchitectureRegistry()
    torchvision_detectors.register_architectures(fresh)
    assert len(fresh) == len(DETECTORS)


# -- the DetectionNet contract, for every detector ------------------------------------------
@pytest.mark.parametrize("name", list(DETECTORS))
def test_one_training_step_gives_finite_losses_that_reach_every_trainable_layer(registry: ArchitectureRegistry, name: str) -> None:
    net = built(registry, name)
    size = _size(name)
    first, target = scene(size, seed=1)
    second, _ = scene(size, seed=2)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with single_threaded():
        net.train()
        net.zero_grad()
        losses = net(torch.stack([first, second]), [target, empty])
        assert isinstance(losses, dict) and losses
        assert all(torch.isfinite(value) for value in losses.values()), losses
        sum(losses.values()).backward()
    head = net.get_submodule(registry.get(name).head_name)
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in head.parameters()), "no gradient in the head"
    backbone = [p for p in net.model.backbone.parameters() if p.requires_grad]
    assert backbone and all(p.grad is not None for p in backbone), "the loss does not reach the backbone"


@pytest.mark.parametrize("name", list(DETECTORS))
def test_evaluation_returns_scored_boxes_per_image_best_first_with_class_ids_from_zero(
    registry: ArchitectureRegistry, name: str
) -> None:
    net = built(registry, name)
    size = _size(name)
    images = torch.stack([scene(size, seed=3)[0], scene(size, seed=4)[0]])
    with single_threaded(), torch.no_grad():
        found = net.eval()(images)
    assert isinstance(found, list) and len(found) == 2
    for one in found:
        assert set(one) == {"boxes", "scores", "labels"}
        k = one["scores"].shape[0]
        assert one["boxes"].shape == (k, 4) and one["labels"].shape == (k,) and one["labels"].dtype == torch.int64
        assert k > 0, "the low score threshold keeps detections of an untrained network"
        assert 0 <= int(one["labels"].min()) and int(one["labels"].max()) < NUM_CLASSES
        assert bool((one["scores"][:-1] >= one["scores"][1:]).all())
        assert float(one["scores"].min()) >= SCORE_THRESHOLD
        assert bool((one["boxes"][:, 2:] >= one["boxes"][:, :2]).all())
        assert float(one["boxes"].min()) >= 0 and bool((one["boxes"][:, 2] <= size[1]).all())


def _export(net: nn.Module, size: tuple[int, int]) -> bytes:
    class ExportView(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return self.net.export_forward(images)

    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            ExportView().eval(),
            (torch.zeros(1, 3, *size),),
            buffer,
            input_names=["images"],
            output_names=["boxes", "scores", "labels"],
            dynamic_axes={"boxes": {0: "detections"}, "scores": {0: "detections"}, "labels": {0: "detections"}},
            **ONNX_EXPORT_ARGS,
        )
    return buffer.getvalue()


#: (scale of the class weights, added to the logit of class 0) that give an untrained network some
#: detections above 0.3 with distinct scores (else ties at a cut make the comparison a coin toss)
CONFIDENT: dict[str, tuple[float, float]] = {"fasterrcnn": (1.0, 2.0), "retinanet": (1.0, 4.5), "fcos": (1.0, 3.0),
                                             "ssd300": (0.03, 1.0), "ssdlite": (1.0, -1.0)}


def _confident(net: nn.Module, name: str) -> None:
    """Batch-norm statistics of a real batch (an untrained SSDlite answers 0.25 everywhere without them),
    then class 0 made likelier, so that the comparison at 0.3 has detections to compare."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    size = _size(name)
    (first, target), (second, other) = scene(size, seed=8), scene(size, seed=9)
    with torch.no_grad():
        for norm in norms:
            norm.momentum = 1.0
        net.train()(torch.stack([first, second]), [target, other])
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        net.eval()
        scale, bias = next(value for family, value in CONFIDENT.items() if name.startswith(family))
        model = net.model
        if hasattr(model, "roi_heads"):
            layers = [(model.roi_heads.box_predictor.cls_score, NUM_CLASSES + 1, 1)]
        elif hasattr(model.head.classification_head, "cls_logits"):  # RetinaNet, FCOS: A anchors x C classes
            layers = [(model.head.classification_head.cls_logits, NUM_CLASSES, 0)]
        else:  # SSD: one conv per feature map, columns [background, class 0, ...] per anchor
            branches = model.head.classification_head.module_list
            layers = [(b if isinstance(b, nn.Conv2d) else b[-1], NUM_CLASSES + 1, 1) for b in branches]
        for layer, columns, class_0 in layers:
            layer.weight.mul_(scale)
            layer.bias.mul_(scale).view(-1, columns)[:, class_0] += bias


def _matched(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> int:
    """Pair each expected detection with an unused one of the same label (IoU >= 0.99, or corners within 0.05 px)."""
    iou = box_iou(expected["boxes"], got["boxes"])
    close = (expected["boxes"][:, None, :] - got["boxes"][None, :, :]).abs().amax(-1) <= 0.05
    ok = ((iou >= 0.99) | close) & (expected["labels"][:, None] == got["labels"][None, :])
    ok &= (expected["scores"][:, None] - got["scores"][None, :]).abs() <= 1e-3
    used: set[int] = set()
    for row in ok:
        free = [j for j in row.nonzero().flatten().tolist() if j not in used]
        if free:
            used.add(free[0])
    return len(used)


def _export_params() -> list[object]:
    slow = [
        pytest.mark.slow_models,
        pytest.mark.skipif(not ALL_MODELS, reason="a 100-170 MB export; set MODELYARD_ALL_MODELS=1"),
    ]
    return [pytest.param(name, marks=[] if name in EXPORTED_BY_DEFAULT else slow) for name in DETECTORS]


@pytest.mark.parametrize("name", _export_params())
def test_export_forward_exports_to_onnx_and_onnxruntime_finds_the_same_boxes(
    registry: ArchitectureRegistry, name: str
) -> None:
    import onnxruntime as ort

    torch.manual_seed(0)
    net = _few_proposals(registry.get(name).build(NUM_CLASSES, image_size=_size(name)))
    size = _size(name)
    with single_threaded():
        _confident(net, name)
        session = ort.InferenceSession(_export(net, size), providers=["CPUExecutionProvider"])
        image = scene(size, seed=5)[0][None]
        with torch.no_grad():
            boxes, scores, labels = net.export_forward(image)
    onnx_boxes, onnx_scores, onnx_labels = session.run(None, {"images": image.numpy()})
    expected = {"boxes": boxes, "scores": scores, "labels": labels}
    got = {"boxes": torch.from_numpy(onnx_boxes), "scores": torch.from_numpy(onnx_scores), "labels": torch.from_numpy(onnx_labels)}
    assert onnx_labels.dtype == np.int64 and onnx_boxes.shape == (onnx_scores.shape[0], 4)
    assert bool((np.diff(onnx_scores) <= 0).all()), "ONNX detections are not highest score first"
    above = int((scores > 0.3).sum())
    assert above > 0, "the check needs confident detections"
    assert int((got["scores"] > 0.3).sum()) == above
    confident = {key: value[scores > 0.3] for key, value in expected.items()}
    assert _matched(confident, got) == above
    assert _matched(expected, got) >= 0.95 * len(scores)  # below 0.3, ties at the cut may swap a few


# -- options -------------------------------------------------------------------------------
def test_unknown_options_other_channels_and_dropout_are_refused(registry: ArchitectureRegistry) -> None:
    arch = registry.get("ssdlite320_mobilenet_v3_large")
    with pytest.raises(ValidationError, match="ssdlite320_mobilenet_v3_large does not take option 'anchors'") as caught:
        arch.build(3, anchors=4)
    assert caught.value.field == "model.anchors"
    with pytest.raises(ValidationError, match="takes 3-channel") as caught:
        arch.build(3, in_channels=1)
    assert caught.value.field == "data.channels"
    with pytest.raises(ValidationError, match="has no dropout layer") as caught:
        arch.build(3, dropout=0.2)
    assert caught.value.field == "model.dropout"


def test_ssd300_refuses_images_too_small_for_its_vgg_layers_before_building(
    registry: ArchitectureRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tvm, "get_model", lambda *a, **k: pytest.fail("built before checking the size"))
    with pytest.raises(ValidationError, match="ssd300_vgg16 needs images of at least 268x268 pixels, got 256x300") as caught:
        registry.get("ssd300_vgg16").build(3, image_size=(256, 300))
    assert caught.value.field == "data.image_size"


def test_the_input_transform_maps_imagenet_normalised_pixels_to_each_familys_range(registry: ArchitectureRegistry) -> None:
    x = torch.rand(3, 8, 8)
    normalised = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    rcnn = built(registry, "fasterrcnn_mobilenet_v3_large_320_fpn").model.transform
    assert (rcnn.image_mean, rcnn.image_std) == ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    ssdlite = built(registry, "ssdlite320_mobilenet_v3_large").model.transform
    assert torch.allclose(ssdlite.normalize(normalised), (x - 0.5) / 0.5, atol=1e-5)  # SSDlite wants -1..1
    ssd300 = built(registry, "ssd300_vgg16").model.transform
    vgg_mean = torch.tensor([0.48235, 0.45882, 0.40784])[:, None, None]
    assert torch.allclose(ssd300.normalize(normalised), (x - vgg_mean) * 255, atol=1e-3)  # SSD300: 0..255 minus mean
    image, target = rcnn.resize(normalised, {"boxes": torch.ones(1, 4)})
    assert image is normalised and torch.equal(target["boxes"], torch.ones(1, 4))  # never resized


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "ssdlite320_mobilenet_v3_large"])
def test_a_network_built_on_the_meta_device_adopts_a_state_dict_and_detects_the_same(
    registry: ArchitectureRegistry, name: str
) -> None:
    """How a checkpoint is loaded (core's ``_built_from_weights``): anchors are not in the state dict."""
    net = built(registry, name).eval()
    with torch.device("meta"):
        empty = _few_proposals(registry.get(name).build(NUM_CLASSES, image_size=_size(name)))
    empty.load_state_dict(dict(net.state_dict()), strict=True, assign=True)  # a plain dict, as core's
    image = scene(_size(name), seed=6)[0][None]
    with single_threaded(), torch.no_grad():
        expected, got = net(image)[0], empty.eval()(image)[0]
    assert all(torch.equal(expected[key], got[key]) for key in ("boxes", "scores", "labels"))


# -- pretrained COCO weights, offline --------------------------------------------------------
@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under ``TORCH_HOME`` and a network that is down (the download boundary)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_pretrained_weights_not_cached_and_no_network_name_the_missing_file(
    registry: ArchitectureRegistry, offline_hub: Path
) -> None:
    with pytest.raises(ValidationError) as caught:
        registry.get("fasterrcnn_mobilenet_v3_large_320_fpn").build(3, pretrained=True)
    error = caught.value
    file = "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"
    assert error.field == "model.pretrained"
    assert error.message.startswith(
        f"Pretrained weights for fasterrcnn_mobilenet_v3_large_320_fpn are not available: {file} is not in the torch hub cache ({offline_hub})"
    )
    assert "URLError" in error.message and "set model.pretrained to false" in error.message
    assert (error.details["file"], error.details["cache_dir"]) == (file, str(offline_hub))


def _cache_coco_shaped_weights(name: str) -> dict[str, torch.Tensor]:
    """Write a state dict with the shapes of torchvision's COCO model where the hub cache keeps ``name``'s weights."""
    torch.manual_seed(3)
    state = tvm.get_model(name, weights=None, weights_backbone=None).state_dict()  # 91 classes, as COCO
    target = weights_cache_file(default_weights(name))
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return state


@pytest.mark.parametrize(
    ("name", "new_layer", "replaced", "outputs"),
    [
        ("fasterrcnn_mobilenet_v3_large_320_fpn", "model.roi_heads.box_predictor.cls_score", r"roi_heads\.box_predictor\.", 4),
        ("ssdlite320_mobilenet_v3_large", "model.head.classification_head.module_list.0.1",
         r"head\.classification_head\.module_list\.\d+\.1\.", 6 * 4),
    ],
)  # fmt: skip
def test_pretrained_coco_weights_are_loaded_from_the_hub_cache_and_the_class_layers_replaced(
    registry: ArchitectureRegistry, offline_hub: Path, name: str, new_layer: str, replaced: str, outputs: int
) -> None:
    state = _cache_coco_shaped_weights(name)
    net = registry.get(name).build(NUM_CLASSES, pretrained=True, image_size=(128, 128))
    own = net.state_dict()
    weights = [key for key in state if not key.endswith("num_batches_tracked")]
    kept = [key for key in weights if not re.match(replaced, key)]
    assert 0 < len(weights) - len(kept) <= 12  # only the class layers are new
    assert [key for key in kept if not torch.equal(own["model." + key], state[key])] == []
    layer = net.get_submodule(new_layer)
    assert (layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels) == outputs  # classes + background
    # a checkpoint of the pretrained network fits a network built without weights, and detects the same
    fresh = registry.get(name).build(NUM_CLASSES, image_size=(128, 128))
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in own.items()}
    fresh.load_state_dict(dict(own), strict=True)  # a plain dict, as core loads checkpoints (no version metadata)
    image = scene((128, 128), seed=7)[0][None]
    with single_threaded(), torch.no_grad():
        expected, got = net.eval()(image)[0], fresh.eval()(image)[0]
    assert torch.allclose(expected["boxes"], got["boxes"], atol=1e-2) and torch.equal(expected["labels"], got["labels"])
    with single_threaded():
        net.train()
        (first, target), (second, other) = scene((128, 128), seed=8), scene((128, 128), seed=9)
        losses = net(torch.stack([first, second]), [target, other])  # SSDlite's 1x1 maps need 2 images for batch norm
    assert all(torch.isfinite(value) for value in losses.values())


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("code ran from the hub cache",))


def test_tampered_hub_cache_file_is_refused_without_running_its_code(
    registry: ArchitectureRegistry, offline_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    target = weights_cache_file(default_weights(name))
    target.parent.mkdir(parents=True)
    with open(target, "wb") as handle:
        pickle.dump({"backbone.body.0.0.weight": _Payload()}, handle, protocol=2)
    with pytest.raises(ValidationError) as caught:
        registry.get(name).build(2, pretrained=True)
    assert caught.value.field == "model.pretrained"
    assert caught.value.message.startswith(f"Pretrained weights file {target.name} for {name} cannot be loaded safely")
    assert "code ran" not in capsys.readouterr().out
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # the guard is lifted afterwards


def test_a_built_detector_pickles_and_its_classes_are_module_attributes(registry: ArchitectureRegistry) -> None:
    """DDP's spawn start method and ``torch.save(model)`` pickle the network by class name."""
    net = built(registry, "ssdlite320_mobilenet_v3_large")
    copy = pickle.loads(pickle.dumps(net))
    assert type(copy) is torchvision_detectors.TorchvisionDetector
    assert type(copy.model.transform) is torchvision_detectors.NoResizeTransform
    assert torch.equal(copy.state_dict()["model.head.regression_head.module_list.0.1.weight"],
                       net.state_dict()["model.head.regression_head.module_list.0.1.weight"])  # fmt: skip


def test_ssdlite_trains_on_a_last_batch_of_one_image() -> None:
    """An epoch's last batch may hold one image; SSDlite's 1x1 maps cannot batch-normalise one value alone."""
    import torch

    from modelyard.plugins.torchvision_detectors import architecture_for

    net = architecture_for("ssdlite320_mobilenet_v3_large").build(3, image_size=(128, 128)).train()
    losses = net(torch.rand(1, 3, 128, 128), [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 70.0]]),
                                               "labels": torch.tensor([1])}])
    total = sum(losses.values())
    assert torch.isfinite(total) and total.requires_grad
