"""Explanations of a classifier's answer: Grad-CAM heat maps, computed by Captum.

Grad-CAM (Selvaraju et al., 2017) weighs the activations of a convolution
layer by the mean gradient of one class's logit with respect to them, keeps
the positive part and upsamples it to the image: where the network looked
for that class. The arithmetic is Captum's (``captum.attr.LayerGradCam`` and
``LayerAttribution.interpolate``; pytorch/captum, BSD-3, maintained by the
PyTorch team): it hooks the layer for one forward pass, takes the gradients
with ``torch.autograd.grad`` (nothing accumulates in ``.grad``) and removes
its hook in a ``finally``. pytorch-grad-cam does the same but pulls in
OpenCV, scikit-learn and ttach; hand-written hooks would be ours to keep
right.

What is ours is the rest: the layer (``target_layer``: the network's last
feature map with more than one pixel, the output of its last convolution
block, found by running it once, so it works for ``simple_cnn``,
torchvision's ResNets and MobileNets and typical plugin networks without
naming layers per architecture), normalisation and the PNG.

A heat map has the model's input size (``height x width`` of the run's
``data.image_size``): its pixels are the pixels the network saw, the image
as sent resized (bilinear, not keeping the aspect ratio) to that size, so
stretching the PNG to the image's width and height overlays it on the image.
Values are Grad-CAM's, ReLU'd and divided by the image's maximum (0..1; all
zero when nothing speaks for the class), drawn with the ``inferno`` colour
map (black, purple, orange, pale yellow for the most important pixels).

Gradients need a module outside ``inference_mode``: the caller holds the
predictor's ``lock`` (no batch of the batcher runs meanwhile, so no plain
prediction sees Captum's hook) and this module turns gradients on itself. The
module stays in eval mode (batch norm reads its running statistics, nothing
updates them) with its channels-last weights; nothing about the network is
changed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ValidationError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .predictors import CheckpointPredictor

GRADCAM = "gradcam"
#: Images per Grad-CAM pass (the gradients of a batch are held at once; a request may send 64 images).
CHUNK = 16

#: ``inferno`` (matplotlib's perceptually uniform map) at 9 even steps, 0..255 RGB; interpolated to 256 entries.
_INFERNO_ANCHORS = np.array([
    (0, 0, 4), (33, 12, 74), (87, 16, 110), (138, 34, 106), (188, 55, 84),
    (228, 90, 49), (249, 142, 9), (249, 203, 53), (252, 255, 164),
], dtype=np.float64)
_STEPS = np.linspace(0.0, 1.0, 256)
INFERNO = np.stack([np.interp(_STEPS, np.linspace(0.0, 1.0, len(_INFERNO_ANCHORS)), _INFERNO_ANCHORS[:, channel])
                    for channel in range(3)], axis=1).round().astype(np.uint8)

@dataclass(frozen=True)
class HeatMaps:
    """Grad-CAM of a batch: the layer it used and one ``float32`` ``(height, width)`` map in 0..1 per image."""

    layer: str
    maps: np.ndarray  # (N, H, W), the model's input size

    def png(self, index: int) -> bytes:
        """The map of image ``index`` as an RGB PNG in the ``inferno`` colour map."""
        return heat_map_png(self.maps[index])


def heat_map_png(values: np.ndarray) -> bytes:
    """A 2-D map of values in 0..1 as an RGB PNG (``inferno``: 0 black, 1 pale yellow)."""
    from PIL import Image

    levels = np.clip(np.nan_to_num(values, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(INFERNO[levels]).save(buffer, format="PNG")  # uint8 (h, w, 3): RGB
    return buffer.getvalue()


def target_layer(net: nn.Module, example: torch.Tensor) -> tuple[str, nn.Module]:
    """The module whose output Grad-CAM weighs: the last feature map of ``net`` on ``example`` (a normalised batch).

    That is the module that *finishes* last, in one probing forward pass
    without gradients, among those answering with a feature map (a 4-D tensor
    whose height and width are those of a ``Conv2d`` output of more than one
    pixel), provided it finishes no earlier than the last such ``Conv2d``:
    the rectified output of the last convolution block, as in Grad-CAM's
    paper and the usual choices (``layer4`` of a ResNet, ``features`` of a
    MobileNet). A container finishes after its children, so the block is
    chosen, not the raw ``Conv2d`` output before batch norm (where the
    gradient-weighted sum is shifted by batch norm's offset and, on a weakly
    trained network, is negative everywhere). Order of execution, not of
    declaration, decides. The probe's hooks are removed before this returns.

    A ``ValidationError`` (``explain``) when the network has no ``Conv2d``
    with a spatial output at this input size.
    """
    import torch
    from torch import nn

    modules = dict(net.named_modules())
    if not any(isinstance(module, nn.Conv2d) for module in modules.values()):
        raise ValidationError("Grad-CAM needs a convolutional network: this model has no Conv2d layer",
                              field="explain")
    names = {module: name for name, module in modules.items() if name}  # the root's output is the logits
    finished: list[tuple[str, tuple[int, int] | None, bool]] = []  # (name, (h, w) of a 4-D output, is a Conv2d)

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        size = None
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            size = (int(output.shape[-2]), int(output.shape[-1]))
        finished.append((names[module], size, isinstance(module, nn.Conv2d)))

    handles = [module.register_forward_hook(record) for module in names]
    try:
        with torch.no_grad():
            net(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    # feature-map sizes are those of spatial convolution outputs: a channels-last permute's (w, c) is not one
    maps = {size for _, size, conv in finished if conv and size is not None and size[0] * size[1] > 1}
    last_conv = max((i for i, (_, size, conv) in enumerate(finished) if conv and size in maps), default=None)
    if last_conv is None:
        raise ValidationError("Grad-CAM needs a convolution with a spatial output: every Conv2d of this model "
                              "answers with one pixel at its input size", field="explain")
    name = next(name for name, size, _ in reversed(finished[last_conv:]) if size in maps)
    return name, modules[name]


def gradcam(predictor: CheckpointPredictor, batch: torch.Tensor, class_ids: Sequence[int]) -> HeatMaps:
    """Grad-CAM of class ``class_ids[i]`` for image ``i`` of a ``uint8`` NCHW batch (the predictor's ``pixels``).

    The caller holds ``predictor.lock``. The maps have the batch's height and
    width (the model's input size).
    """
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    if len(class_ids) != int(batch.shape[0]):
        raise ValueError(f"{len(class_ids)} class ids for {int(batch.shape[0])} images")
    trained = predictor.trained
    net = trained.net
    height, width = int(batch.shape[-2]), int(batch.shape[-1])
    maps: list[np.ndarray] = []
    with torch.inference_mode(False), torch.enable_grad():
        images = trained.normalize(batch)
        name, layer = target_layer(net, images)
        explainer = LayerGradCam(net, layer)
        for start in range(0, int(images.shape[0]), CHUNK):
            chunk = images[start:start + CHUNK].detach()
            targets = [int(c) for c in class_ids[start:start + CHUNK]]
            attribution = explainer.attribute(chunk, target=targets, relu_attributions=True)
            upsampled = LayerAttribution.interpolate(attribution.detach().float(), (height, width),
                                                     interpolate_mode="bilinear")
            maps.extend(_unit_range(m) for m in upsampled[:, 0].clamp_min(0).cpu().numpy())
    return HeatMaps(name, np.stack(maps).astype(np.float32))


def _unit_range(values: np.ndarray) -> np.ndarray:
    """``values`` (>= 0) divided by their maximum; all zero when the maximum is 0 (or not finite)."""
    peak = float(values.max()) if values.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return np.zeros_like(values)
    return values / peak
