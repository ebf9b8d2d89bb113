"""torchvision's object detectors as ``object_detection`` architectures.

Faster R-CNN (ResNet-50 FPN v1/v2, MobileNetV3-Large FPN and its 320 variant),
RetinaNet (v1/v2), FCOS, SSD300 (VGG16) and SSDlite320 (MobileNetV3-Large).
``build`` returns a ``TorchvisionDetector``: a plain ``nn.Module`` around the
torchvision model that follows ``modelyard.core``'s ``DetectionNet`` contract.

What the wrapper changes in torchvision's model:

- **Inputs.** The task feeds images already resized to ``image_size`` and
  normalised with ImageNet's mean/std. The model's own transform
  (``GeneralizedRCNNTransform``) is replaced by one that never resizes and
  only re-maps the ImageNet-normalised pixels to the range the family's
  weights were trained on: nothing for Faster R-CNN, RetinaNet and FCOS
  (their ``image_mean`` becomes 0 and ``image_std`` 1), ``0..255`` minus
  the VGG mean for SSD300, ``-1..1`` for SSDlite. It still batches (pads to
  a multiple of 32 for the FPN families) and maps boxes back.
- **Class ids** are ``0 .. num_classes - 1`` in targets and outputs. Faster
  R-CNN and SSD reserve id 0 for the background: they are built for
  ``num_classes + 1`` classes and the wrapper shifts ids by one; RetinaNet and
  FCOS (sigmoid classifiers) take the ids as they are.
- **Scores.** Every model keeps detections down to a score of
  ``SCORE_THRESHOLD`` (0.01), low enough for mAP, instead of torchvision's
  0.05 (Faster R-CNN, RetinaNet), 0.2 (FCOS), 0.01 (SSD) or 0.001 (SSDlite).
  Detections come highest score first, at most torchvision's
  ``detections_per_img`` per image (100 Faster R-CNN, 200 SSD, 300 others).
- **Targets** with degenerate boxes (``x2 <= x1`` or ``y2 <= y1``, e.g. cut
  by an augmentation) lose those boxes instead of failing the step;
  an image may have no boxes at all. SSDlite trains on batches of at least
  two images only: its last feature maps are 1x1, where batch norm needs more
  than one value per channel (torchvision's own limit).

``pretrained=True`` loads torchvision's COCO weights for the whole detector
(``DEFAULT``) from the torch hub cache, through ``modelyard.core``'s
``ensure_weights_cached`` / ``loading_cached_weights`` (downloaded once,
``weights_only=True``, a ``model.pretrained`` error naming the file and the
folder when it cannot be fetched or loaded), then replaces the layers that
depend on the class count: Faster R-CNN's ``box_predictor``, the last
convolution of RetinaNet's and FCOS's classification head, and the last
convolution of each of SSD's classification-head branches. torchvision's
defaults for fine-tuning then apply: frozen batch norm in the ResNet-50 v1
and MobileNet backbones, the first backbone stages frozen.

A network built with ``pretrained=True`` has exactly the state dict keys
and shapes of one built with ``pretrained=False``, so a checkpoint can be
rebuilt without fetching anything: batch norm layers keep no
``num_batches_tracked`` (frozen batch norm has none), and the frozen batch
norm of the v1 COCO weights uses torchvision's usual ``eps`` (1e-5) instead
of 0. Built on the ``meta`` device, the anchor generators still get real
(CPU) anchors, so a network that adopted a checkpoint's tensors runs.

Backbone-only ImageNet weights are not offered: only ``image_size`` reaches
``build`` from a config, and for SSDlite torchvision's backbone-pretrained
network has another shape than the one a checkpoint is rebuilt into.
``in_channels`` must be 3 and ``dropout`` 0 (these networks have no slot for
either); other options than ``image_size`` are refused.

Export: ``export_forward(images)`` (one image) returns ``(boxes, scores,
labels)``. Every family exports with torch's TorchScript-based ONNX exporter
(``torch.onnx.export(..., dynamo=False, opset_version=17)``; the dynamo
exporter needs ``onnxscript``, which is not installed) and runs in
onnxruntime; see tests/plugins/test_torchvision_detectors.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from modelyard.core import Architecture, ValidationError, ensure_weights_cached, hookimpl, loading_cached_weights

if TYPE_CHECKING:
    import torch
    from torch import nn

OBJECT_DETECTION = "object_detection"

#: Detections below this score are dropped inside the model (low, so that evaluation can compute mAP).
SCORE_THRESHOLD = 0.01

#: What the task feeds: ImageNet-normalised pixels (``core/training/worker/data.py``).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DetectorFamily:
    """What differs between torchvision's detector families, for the wrapper."""

    #: ``1`` when class id 0 is the background (softmax classifiers), ``0`` for sigmoid classifiers
    label_offset: int
    #: the builder argument of the score threshold
    score_argument: str
    #: what ``freeze_backbone`` keeps trainable
    head_name: str
    #: batch padding of the transform (FPN strides need 32; SSD pads nothing)
    size_divisible: int
    #: the smallest side the network accepts
    min_side: int


FASTER_RCNN = DetectorFamily(1, "box_score_thresh", "model.roi_heads", 32, 32)
RETINANET = DetectorFamily(0, "score_thresh", "model.head", 32, 32)
FCOS = DetectorFamily(0, "score_thresh", "model.head", 32, 32)
SSD300 = DetectorFamily(1, "score_thresh", "model.head", 1, 268)  # VGG's unpadded extra layers need 268 px
SSDLITE = DetectorFamily(1, "score_thresh", "model.head", 1, 32)

#: name -> (family, default input size). The ResNet-50 and full-size MobileNet models take 640 px by
#: default (torchvision resizes to a shorter side of 800 for COCO; 640 costs ~2/3 of that); the 320 and
#: 300 variants the size they were trained at.
DETECTORS: dict[str, tuple[DetectorFamily, tuple[int, int]]] = {
    "fasterrcnn_resnet50_fpn": (FASTER_RCNN, (640, 640)),
    "fasterrcnn_resnet50_fpn_v2": (FASTER_RCNN, (640, 640)),
    "fasterrcnn_mobilenet_v3_large_fpn": (FASTER_RCNN, (640, 640)),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (FASTER_RCNN, (320, 320)),
    "retinanet_resnet50_fpn": (RETINANET, (640, 640)),
    "retinanet_resnet50_fpn_v2": (RETINANET, (640, 640)),
    "fcos_resnet50_fpn": (FCOS, (640, 640)),
    "ssd300_vgg16": (SSD300, (300, 300)),
    "ssdlite320_mobilenet_v3_large": (SSDLITE, (320, 320)),
}


def default_weights(name: str) -> Any:
    """torchvision's ``DEFAULT`` (COCO) weights for detector ``name``."""
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


# -- the wrapper ---------------------------------------------------------------------------
#: the ``nn.Module`` classes, defined on first use so that registering the plugin never imports torch
_CLASSES: dict[str, type] = {}
_CLASS_NAMES = ("TorchvisionDetector", "NoResizeTransform", "BatchNorm2dNoCounter")


def _module_classes() -> dict[str, type]:
    if not _CLASSES:
        for cls in _define_classes():
            cls.__module__, cls.__qualname__ = __name__, cls.__name__  # pickled by name, found by __getattr__
            _CLASSES[cls.__name__] = cls
    return _CLASSES


def __getattr__(name: str) -> type:
    """``TorchvisionDetector`` and the other classes as module attributes (for pickle and for readers)."""
    if name in _CLASS_NAMES:
        return _module_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_classes() -> tuple[type, ...]:
    import torch
    from torch import Tensor, nn
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class TorchvisionDetector(nn.Module):
        """A torchvision detector behind modelyard's ``DetectionNet`` contract (see the module docstring)."""

        def __init__(self, model: nn.Module, label_offset: int) -> None:
            super().__init__()
            self.model = model
            self.label_offset = label_offset

        def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Any:
            batch = list(images.unbind(0))
            if self.training:
                if targets is None:
                    raise ValueError("a detector in training mode needs targets")
                prepared = [self._target(t) for t in targets]
                if len(batch) == 1:
                    # an epoch's last batch can hold one image; SSDlite's 1x1 feature maps cannot batch-normalise a
                    # single value, so the image goes in twice (the same losses, as the losses are image means)
                    batch, prepared = batch * 2, prepared * 2
                return self.model(batch, prepared)
            return [self._detections(d) for d in self.model(batch)]

        def export_forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            """``(boxes [K, 4], scores [K], labels [K])`` for one image, highest score first."""
            found = self._detections(self.model(list(images.unbind(0)))[0])
            return found["boxes"], found["scores"], found["labels"]

        def _target(self, target: dict[str, Tensor]) -> dict[str, Tensor]:
            boxes = target["boxes"].to(torch.float32).reshape(-1, 4)
            labels = target["labels"].to(torch.int64).reshape(-1)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            return {"boxes": boxes[keep], "labels": labels[keep] + self.label_offset}

        def _detections(self, found: dict[str, Tensor]) -> dict[str, Tensor]:
            order = found["scores"].argsort(descending=True)
            return {
                "boxes": found["boxes"][order],
                "scores": found["scores"][order],
                "labels": found["labels"][order] - self.label_offset,
            }

    class NoResizeTransform(GeneralizedRCNNTransform):
        """torchvision's detection transform without the resize: inputs already have the configured size."""

        def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor] | None]:
            return image, target

    class BatchNorm2dNoCounter(nn.BatchNorm2d):
        """Batch norm without ``num_batches_tracked`` (unused with a set momentum), as frozen batch norm.

        A checkpoint then fits whether its network had frozen batch norm (pretrained) or not,
        and a counter in a state dict (a torchvision file) is ignored.
        """

        def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any, *args: Any) -> None:
            state_dict.pop(prefix + "num_batches_tracked", None)
            # version 2: batch norm adds a missing counter to the state dict of older versions
            super()._load_from_state_dict(state_dict, prefix, {**local_metadata, "version": 2}, *args)

    return TorchvisionDetector, NoResizeTransform, BatchNorm2dNoCounter


def _input_transform(model: nn.Module, family: DetectorFamily, image_size: tuple[int, int]) -> nn.Module:
    """A transform that never resizes and maps ImageNet-normalised input to the range ``model`` expects.

    ``model`` wants ``(x - m) / s`` of 0..1 pixels ``x``; it gets ``n = (x - M) / S`` (ImageNet
    ``M``, ``S``), so its transform normalises ``n`` with mean ``(m - M) / S`` and std ``s / S``.
    """
    own = model.transform  # type: ignore[union-attr]
    mean = [(m - big_m) / big_s for m, big_m, big_s in zip(own.image_mean, IMAGENET_MEAN, IMAGENET_STD)]
    std = [s / big_s for s, big_s in zip(own.image_std, IMAGENET_STD)]
    transform: nn.Module = _module_classes()["NoResizeTransform"](
        min(image_size), max(image_size), mean, std, size_divisible=family.size_divisible
    )
    return transform


# -- building ------------------------------------------------------------------------------
def build_detector(
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    dropout: float = 0.0,
    *,
    model_name: str,
    **options: Any,
) -> nn.Module:
    """Build torchvision's detector ``model_name`` for ``num_classes`` classes (ids ``0 .. num_classes - 1``).

    Option ``image_size=(h, w)`` is the size every input has (default: the
    architecture's ``default_input_size``).
    """
    family, default_size = DETECTORS[model_name]
    unknown = sorted(set(options) - {"image_size"})
    if unknown:
        raise ValidationError(f"{model_name} does not take option '{unknown[0]}'", field=f"model.{unknown[0]}")
    if in_channels != 3:
        raise ValidationError(
            f"{model_name} takes 3-channel (RGB) images, not {in_channels}; set data.channels to 3", field="data.channels"
        )
    if dropout:
        raise ValidationError(f"{model_name} has no dropout layer; set model.dropout to 0", field="model.dropout")
    size = options.get("image_size") or default_size
    image_size = (int(size[0]), int(size[1]))
    if min(image_size) < family.min_side:
        raise ValidationError(
            f"{model_name} needs images of at least {family.min_side}x{family.min_side} pixels, "
            f"got {image_size[0]}x{image_size[1]}",
            field="data.image_size",
        )
    kwargs: dict[str, Any] = {family.score_argument: SCORE_THRESHOLD}
    model = _coco_model(model_name, kwargs) if pretrained else _fresh_model(model_name, num_classes + family.label_offset, kwargs)
    if pretrained:
        _replace_class_layers(model, num_classes + family.label_offset)
    _same_state_either_way(model)
    _real_anchors(model)
    model.transform = _input_transform(model, family, image_size)
    detector: nn.Module = _module_classes()["TorchvisionDetector"](model, family.label_offset)
    return detector


def _fresh_model(name: str, classes: int, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision.models as tvm

    try:
        return tvm.get_model(name, weights=None, weights_backbone=None, num_classes=classes, **kwargs)
    except Exception as exc:
        raise ValidationError(f"Cannot build {name}: {type(exc).__name__}: {exc}", field="model.architecture") from exc


def _coco_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """torchvision's ``name`` with its COCO weights, from the hub cache (fetched once)."""
    import torchvision.models as tvm

    weights = default_weights(name)
    cache_file = ensure_weights_cached(name, weights)
    with loading_cached_weights(name, cache_file):
        return tvm.get_model(name, weights=weights, progress=False, **kwargs)


def _replace_class_layers(model: nn.Module, classes: int) -> None:
    """Give the layers that score classes ``classes`` outputs (freshly initialised, as torchvision does)."""
    import torch
    from torch import nn
    from torchvision.models import detection
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.ssd import SSD

    if isinstance(model, detection.FasterRCNN):
        old = model.roi_heads.box_predictor
        model.roi_heads.box_predictor = FastRCNNPredictor(old.cls_score.in_features, classes)
    elif isinstance(model, (detection.RetinaNet, detection.FCOS)):
        head = model.head.classification_head
        old = head.cls_logits
        head.cls_logits = nn.Conv2d(old.in_channels, head.num_anchors * classes, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(head.cls_logits.weight, std=0.01)
        nn.init.constant_(head.cls_logits.bias, -math.log((1 - 0.01) / 0.01))
        head.num_classes = classes
    elif isinstance(model, SSD):
        head = model.head.classification_head
        for index, branch in enumerate(head.module_list):
            old = branch if isinstance(branch, nn.Conv2d) else branch[-1]
            new = nn.Conv2d(
                old.in_channels, old.out_channels // head.num_columns * classes, old.kernel_size, old.stride, old.padding
            )
            if isinstance(branch, nn.Conv2d):  # SSD300: xavier, as torchvision's _xavier_init
                nn.init.xavier_uniform_(new.weight)
                head.module_list[index] = new
            else:  # SSDlite: normal(0.03), as torchvision's _normal_init
                nn.init.normal_(new.weight, mean=0.0, std=0.03)
                branch[-1] = new
            with torch.no_grad():
                new.bias.zero_()
        head.num_columns = classes
    else:  # pragma: no cover - DETECTORS names only the families above
        raise ValidationError(f"Cannot replace the class layers of {type(model).__name__}", field="model.architecture")


def _same_state_either_way(model: nn.Module) -> None:
    """Make a pretrained and a fresh build hold the same state dict keys and compute the same in eval mode.

    Frozen batch norm (pretrained ResNet-50 v1 and MobileNet backbones) has no
    ``num_batches_tracked`` and, for the v1 COCO weights, ``eps`` 0; batch norm
    (fresh builds) tracks batches and uses ``eps`` 1e-5. Batch norm becomes
    ``BatchNorm2dNoCounter`` (the counter is unused: every momentum is set) and
    frozen batch norm gets batch norm's ``eps``.
    """
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    no_counter = _module_classes()["BatchNorm2dNoCounter"]
    for module in model.modules():
        if type(module) is nn.BatchNorm2d and module.momentum is not None and module.track_running_stats:
            module.__class__ = no_counter  # same state, no counter: a class swap keeps every tensor in place
            module.num_batches_tracked = None
        elif isinstance(module, FrozenBatchNorm2d):
            module.eps = 1e-5


def _real_anchors(model: nn.Module) -> None:
    """Compute anchor shapes on the CPU when the network is built on the ``meta`` device.

    They are plain tensors outside the state dict, so a network that adopts a
    checkpoint's tensors would otherwise keep meta anchors and fail in forward.
    """
    import torch
    from torchvision.models.detection.anchor_utils import AnchorGenerator, DefaultBoxGenerator

    for module in model.modules():
        if isinstance(module, AnchorGenerator) and any(a.is_meta for a in module.cell_anchors):
            with torch.device("cpu"):
                module.cell_anchors = [module.generate_anchors(s, a) for s, a in zip(module.sizes, module.aspect_ratios)]
        elif isinstance(module, DefaultBoxGenerator) and any(p.is_meta for p in module._wh_pairs):
            with torch.device("cpu"):
                module._wh_pairs = module._generate_wh_pairs(len(module.aspect_ratios))


# -- registration --------------------------------------------------------------------------
def _describe(name: str, weights: Any) -> str:
    box_map = weights.meta.get("_metrics", {}).get("COCO-val2017", {}).get("box_map")
    coco = f", COCO box mAP {box_map}" if box_map is not None else ""
    return f"torchvision {name} detector ({weights.meta.get('num_params', 0) / 1e6:.1f}M parameters{coco})"


def architecture_for(name: str) -> Architecture:
    """The ``Architecture`` entry for torchvision detector ``name`` (metadata only, nothing is built)."""
    family, size = DETECTORS[name]
    weights = default_weights(name)
    return Architecture(
        name=name,
        build=partial(build_detector, model_name=name),
        tasks=(OBJECT_DETECTION,),
        default_input_size=size,
        has_pretrained=True,
        description=_describe(name, weights),
        num_parameters=int(weights.meta["num_params"]),  # with COCO's 91 classes
        head_name=family.head_name,
    )


@hookimpl
def register_architectures(registry) -> None:  # type: ignore[no-untyped-def]
    for name in DETECTORS:
        registry.add(architecture_for(name))
