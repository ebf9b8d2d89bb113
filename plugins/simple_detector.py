"""``simple_detector``: a small anchor-free object detector for CPU training and tests (~0.15M parameters).

The detection counterpart of ``simple_cnn``: trains usefully on a CPU in
minutes (mAP@.5 0.99 on held-out ``modelyard sample-data shapes-detection``
images after 12 epochs of 800 images, about one CPU-minute; see
``benchmarks/detection_plain.py``).

Design, CenterNet-style ("Objects as Points", Zhou et al. 2019), because it is
the simplest detector that trains well from scratch at this size:

- **One output scale, stride 4.** A plain conv/BatchNorm/ReLU backbone down to
  stride 8 (one dilated conv widens the receptive field to about 90 px, enough
  for objects filling most of a small canvas), merged back into the stride-4
  features (a one-step FPN), then two heads on the stride-4 map.
- **No anchors, no NMS.** The first head predicts one heat map per class whose
  peaks are object centres (penalty-reduced focal loss against Gaussian
  targets the size of each box); the second predicts, per cell, the centre's
  sub-cell offset and the log of the box's width and height (L1 loss at the
  centre cell). Decoding keeps the cells that are the maximum of their 3x3
  neighbourhood (a max-pool: NMS as a tensor op, exportable and
  deterministic), then the top ``max_detections`` by score.
- **Export-friendly.** ``export_forward`` is tensor ops only (sigmoid,
  max-pool, top-k, gather, a boolean mask for the dynamic box count), so it
  traces to ONNX and TorchScript and scripts with ``torch.jit.script``.

It follows ``modelyard.core.plugin_types.DetectionNet``: in training mode
``net(images, targets)`` returns ``{"heatmap", "offset", "size"}`` losses; in
eval mode ``net(images)`` returns per image ``{"boxes" xyxy, "scores",
"labels"}``, highest score first, every local maximum of the heat maps up to
``max_detections`` (no score threshold; non-peaks are dropped, so the count
varies). Images arrive normalised; it never normalises. Input sides must be
multiples of 4 (the output stride).
"""

from __future__ import annotations

from typing import Any

from modelyard.core import Architecture, ValidationError, hookimpl

#: the output stride: one heat-map cell per 4x4 input pixels
STRIDE = 4
#: build options besides ``image_size``
OPTIONS = ("width", "max_detections")
#: heat-map Gaussian radius as a share of the box (TTFNet's alpha): sigma = ALPHA * side / 6
GAUSSIAN_ALPHA = 0.54
#: initial heat-map bias: sigmoid(-2.19) = 0.1, CenterNet's prior, keeps the first focal-loss steps stable
HEAT_PRIOR_BIAS = -2.19


def build_simple_detector(
    num_classes: int, in_channels: int = 3, pretrained: bool = False, dropout: float = 0.0, **options: Any
) -> Any:
    """Build the detector; options ``image_size=(h, w)`` (multiples of 4), ``width`` (16), ``max_detections`` (100)."""
    if pretrained:
        raise ValidationError("simple_detector has no pretrained weights; set model.pretrained to false",
                              field="model.pretrained")
    unknown = sorted(set(options) - {"image_size", *OPTIONS})
    if unknown:
        raise ValidationError(f"simple_detector does not take option '{unknown[0]}'", field=f"model.{unknown[0]}")
    image_size = options.get("image_size")
    if image_size is not None:
        if len(image_size) != 2 or any(int(side) % STRIDE or int(side) < STRIDE for side in image_size):
            raise ValidationError(
                f"simple_detector needs image sides that are multiples of {STRIDE}, got {tuple(image_size)}",
                field="data.image_size")
    width = options.get("width", 16)
    if isinstance(width, bool) or not isinstance(width, int) or not 4 <= width <= 256:
        raise ValidationError(f"width must be an integer from 4 to 256, got {width!r}", field="model.width")
    max_detections = options.get("max_detections", 100)
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or not 1 <= max_detections <= 10_000:
        raise ValidationError(f"max_detections must be an integer from 1 to 10000, got {max_detections!r}",
                              field="model.max_detections")
    return _detector_class()(num_classes, in_channels=in_channels, width=width, dropout=dropout,
                             max_detections=max_detections)


_DETECTOR_CLASS: Any = None


def _detector_class() -> Any:
    """The ``nn.Module`` class, defined on first use so that registering the plugin never imports torch."""
    global _DETECTOR_CLASS
    if _DETECTOR_CLASS is None:
        _DETECTOR_CLASS = _define_detector()
    return _DETECTOR_CLASS


def _define_detector() -> Any:  # noqa: C901 - one class definition
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn

    def conv_bn(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    class SimpleDetector(nn.Module):
        """CenterNet-style detector, output stride 4 (see the module docstring)."""

        def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16, dropout: float = 0.0,
                     max_detections: int = 100) -> None:
            super().__init__()
            w = width
            self.num_classes = num_classes
            self.max_detections = max_detections
            self.stride = STRIDE
            self.stem = nn.Sequential(conv_bn(in_channels, w, stride=2), conv_bn(w, w))  # /2
            self.stage4 = nn.Sequential(conv_bn(w, 2 * w, stride=2), conv_bn(2 * w, 2 * w))  # /4
            self.stage8 = nn.Sequential(  # /8, receptive field ~90 px with the dilated conv
                conv_bn(2 * w, 4 * w, stride=2), conv_bn(4 * w, 4 * w), conv_bn(4 * w, 4 * w, dilation=2))
            self.lateral = nn.Conv2d(4 * w, 2 * w, 1)
            self.neck = conv_bn(2 * w, 3 * w)
            self.dropout = nn.Dropout(dropout)
            self.heatmap = nn.Sequential(conv_bn(3 * w, 2 * w), nn.Conv2d(2 * w, num_classes, 1))
            self.boxes = nn.Sequential(conv_bn(3 * w, 2 * w), nn.Conv2d(2 * w, 4, 1))  # dx, dy, log w, log h
            nn.init.constant_(self.heatmap[-1].bias, HEAT_PRIOR_BIAS)

        def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
            """Heat-map logits ``[B, C, H/4, W/4]`` and box regression ``[B, 4, H/4, W/4]``."""
            c4 = self.stage4(self.stem(images))
            c8 = self.stage8(c4)
            top = F.interpolate(self.lateral(c8), size=[c4.shape[2], c4.shape[3]], mode="nearest")
            p4 = self.dropout(self.neck(c4 + top))
            return self.heatmap(p4), self.boxes(p4)

        @torch.jit.unused
        def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Any:
            """Training mode: ``{"heatmap", "offset", "size"}`` losses; eval mode: detections per image."""
            if self.training:
                if targets is None:
                    raise ValueError("simple_detector in training mode needs targets (boxes and labels per image)")
                return self.losses(images, targets)
            heat, reg = self.features(images)
            boxes, scores, labels = self.decode(heat, reg)
            keep = scores > 0  # zero: not a local maximum
            return [{"boxes": b[k], "scores": s[k], "labels": l[k]}
                    for b, s, l, k in zip(boxes, scores, labels, keep, strict=True)]

        @torch.jit.export
        def export_forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            """One image in, ``(boxes [K, 4], scores [K], labels [K])`` out, K = the local maxima kept."""
            heat, reg = self.features(images)
            boxes, scores, labels = self.decode(heat, reg)
            keep = scores[0] > 0
            return boxes[0][keep], scores[0][keep], labels[0][keep]

        @torch.jit.export
        def decode(self, heat: Tensor, reg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            """Top-k local maxima per image: boxes ``[B, k, 4]`` (xyxy px), scores ``[B, k]`` (0 = not a peak), labels."""
            batch, classes, height, width = heat.shape
            probs = torch.sigmoid(heat)
            peaks = probs * (F.max_pool2d(probs, 3, stride=1, padding=1) == probs).to(probs.dtype)
            k = min(self.max_detections, classes * height * width)
            scores, index = torch.topk(peaks.reshape(batch, -1), k, dim=1)
            labels = torch.div(index, height * width, rounding_mode="floor")
            cell = index - labels * (height * width)
            ys = torch.div(cell, width, rounding_mode="floor")
            xs = cell - ys * width
            values = torch.gather(reg.reshape(batch, 4, height * width), 2,
                                  cell.unsqueeze(1).expand(batch, 4, k))  # [B, 4, k]
            cx = (xs.to(reg.dtype) + values[:, 0]) * self.stride
            cy = (ys.to(reg.dtype) + values[:, 1]) * self.stride
            half_w = torch.exp(values[:, 2].clamp(max=8.0)) * (self.stride / 2)
            half_h = torch.exp(values[:, 3].clamp(max=8.0)) * (self.stride / 2)
            boxes = torch.stack([
                (cx - half_w).clamp(min=0.0, max=float(width * self.stride)),
                (cy - half_h).clamp(min=0.0, max=float(height * self.stride)),
                (cx + half_w).clamp(min=0.0, max=float(width * self.stride)),
                (cy + half_h).clamp(min=0.0, max=float(height * self.stride)),
            ], dim=2)
            return boxes, scores, labels

        @torch.jit.unused
        def losses(self, images: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
            """Focal loss on the heat maps, L1 on centre offset and log box size at each object's centre cell."""
            heat, reg = self.features(images)
            heat, reg = heat.float(), reg.float()  # losses in float32 under mixed precision too
            batch, classes, height, width = heat.shape
            if len(targets) != batch:
                raise ValueError(f"got {batch} images but {len(targets)} targets")
            boxes = torch.cat([t["boxes"].reshape(-1, 4) for t in targets]).to(reg.dtype) / self.stride
            labels = torch.cat([t["labels"].reshape(-1) for t in targets]).long()
            owner = torch.cat([torch.full((len(t["labels"]),), i, dtype=torch.long) for i, t in enumerate(targets)])
            owner = owner.to(heat.device)
            if len(labels) and (labels.min() < 0 or labels.max() >= classes):
                raise ValueError(f"labels must be class ids 0..{classes - 1}, got {labels.tolist()}")
            sizes = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-2)  # w, h in cells
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            cells = torch.stack([centres[:, 0].floor().clamp(0, width - 1), centres[:, 1].floor().clamp(0, height - 1)], 1)
            target = self._heat_target(cells, sizes, labels, owner, batch, classes, height, width).to(heat.dtype)
            num = max(len(labels), 1)
            # penalty-reduced focal loss (CenterNet, alpha 2, beta 4), from logits for stability
            positive = target == 1
            probs = torch.sigmoid(heat)
            pos_loss = -(F.logsigmoid(heat) * (1 - probs) ** 2)[positive].sum()
            neg_loss = -(F.logsigmoid(-heat) * probs**2 * (1 - target) ** 4)[~positive].sum()
            flat = cells[:, 1].long() * width + cells[:, 0].long()
            pred = reg.permute(0, 2, 3, 1).reshape(batch, height * width, 4)[owner, flat]  # [M, 4]
            offset_loss = F.l1_loss(pred[:, :2], centres - cells, reduction="sum") / num
            size_loss = F.l1_loss(pred[:, 2:], sizes.log(), reduction="sum") / num
            return {"heatmap": (pos_loss + neg_loss) / num, "offset": offset_loss, "size": size_loss}

        @staticmethod
        def _heat_target(cells: Tensor, sizes: Tensor, labels: Tensor, owner: Tensor, batch: int, classes: int,
                         height: int, width: int) -> Tensor:
            """``[B, C, H, W]`` targets: a Gaussian per box (sigma ~ its size) peaking at 1 on its centre cell."""
            target = torch.zeros(batch * classes, height * width, device=cells.device)
            if len(labels) == 0:
                return target.reshape(batch, classes, height, width)
            sigma = (GAUSSIAN_ALPHA * sizes / 6).clamp(min=0.5)
            gx = torch.exp(-((torch.arange(width, device=cells.device) - cells[:, :1]) ** 2) / (2 * sigma[:, :1] ** 2))
            gy = torch.exp(-((torch.arange(height, device=cells.device) - cells[:, 1:]) ** 2) / (2 * sigma[:, 1:] ** 2))
            blobs = (gy[:, :, None] * gx[:, None, :]).reshape(len(labels), height * width)
            rows = (owner * classes + labels).unsqueeze(1).expand(-1, height * width)
            target.scatter_reduce_(0, rows, blobs, "amax")  # overlapping blobs of one class: the higher wins
            return target.reshape(batch, classes, height, width)

    return SimpleDetector


@hookimpl
def register_architectures(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(
        Architecture(
            name="simple_detector",
            build=build_simple_detector,
            tasks=("object_detection",),
            default_input_size=(96, 96),
            has_pretrained=False,
            description="Small CenterNet-style anchor-free detector (stride 4, ~0.15M parameters) for quick CPU training.",
        )
    )
