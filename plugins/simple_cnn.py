"""``simple_cnn``: a small, fast CNN (about 0.15M parameters) for CPU training and tests.

Works at any input size >= 8 px thanks to global average pooling.
"""

from __future__ import annotations

from typing import Any

from modelyard.core import Architecture, ValidationError, hookimpl


def _block(in_ch: int, out_ch: int) -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def build_simple_cnn(
    num_classes: int, in_channels: int = 3, pretrained: bool = False, dropout: float = 0.0, **options: Any
) -> Any:
    from torch import nn

    if pretrained:
        raise ValidationError("simple_cnn has no pretrained weights; set model.pretrained to false", field="model.pretrained")
    width = int(options.get("width", 32))
    features = nn.Sequential(
        _block(in_channels, width),
        _block(width, width),
        nn.MaxPool2d(2),
        _block(width, width * 2),
        _block(width * 2, width * 2),
        nn.MaxPool2d(2),
        _block(width * 2, width * 4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width * 4, num_classes))
    return nn.Sequential(features, head)


@hookimpl
def register_architectures(registry) -> None:  # type: ignore[no-untyped-def]
    registry.add(
        Architecture(
            name="simple_cnn",
            build=build_simple_cnn,
            default_input_size=(32, 32),
            has_pretrained=False,
            description="Small 5-layer CNN for quick CPU training (~0.15M parameters).",
            head_name="1",
        )
    )
