"""Every torchvision classification model as a modelyard architecture.

Registration only reads torchvision's weight metadata (no network is built,
it takes milliseconds). ``build`` makes the torchvision model, then replaces
its classifier head (the last ``nn.Linear``, or squeezenet's final 1x1 conv)
for ``num_classes`` and, when ``in_channels != 3``, its first convolution.

``pretrained=True`` uses torchvision's ``DEFAULT`` weights through its own API:
the file is taken from the torch hub cache (``$TORCH_HOME/hub/checkpoints``)
when present, downloaded otherwise, and when neither works the error names
the missing file and the cache folder so an operator can copy it there.
torchvision's loader calls ``torch.load`` without ``weights_only``; we force
``weights_only=True`` for that call, so a tampered cache file cannot run code.

``model.weights_path`` is loaded by ``build`` itself (it names the parameter)
with ``modelyard.core.load_backbone_weights``: strict on the backbone, the head
left freshly initialised where the file's has another shape, so a 1000-class
ImageNet state dict starts an N-class model. Input sizes a family cannot take
are refused when an experiment is saved: the declared ``min_input_size`` /
``input_size_multiple`` and ``validate`` (ViT and MaxViT need a square,
fixed grid; pretrained ones exactly their weights' size).
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

from modelyard.core import (
    Architecture,
    ValidationError,
    ensure_weights_cached,
    hookimpl,
    load_backbone_weights,
    loading_cached_weights,
    weights_cache_file,  # noqa: F401  (importable from here, as before it moved to modelyard.core)
)

#: Where the classifier head lives, by family (checked against the built models by tests).
HEAD_BY_FAMILY: tuple[tuple[str, str], ...] = (
    ("alexnet", "classifier.6"),
    ("vgg", "classifier.6"),
    ("convnext", "classifier.2"),
    ("densenet", "classifier"),
    ("efficientnet", "classifier.1"),
    ("mnasnet", "classifier.1"),
    ("mobilenet_v2", "classifier.1"),
    ("mobilenet_v3", "classifier.3"),
    ("maxvit", "classifier.5"),
    ("squeezenet", "classifier.1"),
    ("swin", "head"),
    ("vit", "heads.head"),
    ("resnet", "fc"),
    ("resnext", "fc"),
    ("wide_resnet", "fc"),
    ("regnet", "fc"),
    ("shufflenet", "fc"),
    ("googlenet", "fc"),
    ("inception", "fc"),
)

#: Families built for one fixed input size, and the torchvision argument that sets it.
FIXED_SIZE_ARGUMENT: dict[str, str] = {"vit": "image_size", "maxvit": "input_size"}

#: Families whose weights' ``min_size`` is not a hard limit of the network (they run on smaller inputs), so it
#: is not declared as ``min_input_size``; ViT and MaxViT have their own rules (``check_input_size``).
SOFT_MIN_SIZE_FAMILIES: frozenset[str] = frozenset({"swin", "efficientnet", "vit", "maxvit"})

#: Auxiliary classifier heads some families have in their ImageNet weights (not in the model modelyard trains).
AUX_HEADS: dict[str, tuple[str, ...]] = {"inception": ("AuxLogits",), "googlenet": ("aux1", "aux2")}

#: MaxViT-T's attention partitions: after the stem, each of its blocks halves the grid, which must stay a multiple of 7.
_MAXVIT_BLOCKS, _MAXVIT_PARTITION = 4, 7


def head_name_for(name: str) -> str | None:
    """The dotted path of ``name``'s classifier head, or ``None`` for an unknown family."""
    for prefix, head in HEAD_BY_FAMILY:
        if name.startswith(prefix):
            return head
    return None


def _family(name: str) -> str:
    return re.split(r"_|\d", name, maxsplit=1)[0]


def default_weights(name: str) -> Any:
    """torchvision's ``DEFAULT`` weights enum member for ``name`` (``None`` if it has none)."""
    from torchvision.models import get_model_weights

    try:
        return get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        return None


def min_input_size(name: str) -> tuple[int, int]:
    """The smallest input the model accepts, from its weights' metadata (1x1 when unknown)."""
    weights = default_weights(name)
    size = weights.meta.get("min_size", (1, 1)) if weights is not None else (1, 1)
    return int(size[0]), int(size[1])


# -- pretrained weights ------------------------------------------------------------
# ``weights_cache_file`` and ``ensure_weights_cached`` (imported above, still importable from here) live in
# ``modelyard.core`` so that every architecture plugin fetches and loads hub weights the same way.


# -- building --------------------------------------------------------------------------
def build_torchvision(
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    dropout: float = 0.0,
    *,
    model_name: str,
    weights_path: str | Path | None = None,
    **options: Any,
) -> Any:
    """Build torchvision's ``model_name`` with a fresh head for ``num_classes``.

    ``dropout > 0`` puts an ``nn.Dropout`` in front of the new head (models keep
    their own dropout too). Option ``image_size=(h, w)`` sets the input size of
    fixed-size families (ViT, MaxViT; square only); others ignore it.
    ``weights_path`` (``model.weights_path``) is loaded last with
    ``load_backbone_weights``: the backbone must match, a head (and inception's
    or googlenet's auxiliary heads) of another shape is skipped.
    """
    import torchvision.models as tvm

    unknown = sorted(set(options) - {"image_size"})
    if unknown:
        raise ValidationError(f"{model_name} does not take option '{unknown[0]}'", field=f"model.{unknown[0]}")
    kwargs = _builder_kwargs(model_name, pretrained, options.get("image_size"))
    weights = None
    if pretrained:
        weights = default_weights(model_name)
        if weights is None:
            raise ValidationError(f"torchvision has no pretrained weights for {model_name}", field="model.pretrained")
        cache_file = ensure_weights_cached(model_name, weights)
    if weights is not None:
        with loading_cached_weights(model_name, cache_file):
            model = tvm.get_model(model_name, weights=weights, progress=False, **kwargs)
    else:
        try:
            model = tvm.get_model(model_name, weights=None, **kwargs)
        except Exception as exc:
            raise ValidationError(f"Cannot build {model_name} with {kwargs}: {exc}", field="model.architecture") from exc
    if model_name.startswith("inception") and getattr(model, "AuxLogits", None) is not None:
        model.aux_logits = False  # torchvision keeps the aux head when loading weights; we train one head
        model.AuxLogits = None
    head = replace_head(model, num_classes, dropout)
    if in_channels != 3:
        replace_first_conv(model, in_channels, average_rgb=pretrained)
        if hasattr(model, "transform_input"):
            model.transform_input = False  # it rescales 3 RGB channels by ImageNet statistics
    if weights_path is not None:
        load_backbone_weights(model, weights_path, head=(head, *AUX_HEADS.get(_family(model_name), ())))
    return model


def _builder_kwargs(name: str, pretrained: bool, image_size: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if name in ("googlenet", "inception_v3") and not pretrained:
        kwargs.update(aux_logits=False, init_weights=True)
    argument = FIXED_SIZE_ARGUMENT.get(_family(name))
    if argument is not None:
        size = check_input_size(name, pretrained, image_size)
        kwargs[argument] = size[0] if argument == "image_size" else size
    return kwargs


def _fixed_default_size(name: str) -> tuple[int, int]:
    default = default_weights(name)
    return (int(default.meta["min_size"][0]), int(default.meta["min_size"][1])) if default is not None else (224, 224)


def check_input_size(name: str, pretrained: bool, image_size: Any) -> tuple[int, int]:
    """The input size a fixed-size family (ViT, MaxViT) is built for; ``ValidationError`` on ``data.image_size``.

    Square only; exactly the weights' size when pretrained; MaxViT's grid must
    divide into its attention partitions in every block. Other families take
    any size (their limits are the declared ``min_input_size``).
    """
    default_size = _fixed_default_size(name)
    size = (int(image_size[0]), int(image_size[1])) if image_size is not None else default_size
    if _family(name) not in FIXED_SIZE_ARGUMENT:
        return size
    if size[0] != size[1]:
        raise ValidationError(f"{name} needs a square input size, got {size[0]}x{size[1]}", field="data.image_size")
    if pretrained and size != default_size:
        raise ValidationError(
            f"Pretrained {name} expects {default_size[0]}x{default_size[1]} input, got {size[0]}x{size[1]}",
            field="data.image_size",
        )
    if _family(name) == "maxvit" and not _maxvit_fits(size[0]):
        fits = [s for s in range(size[0] - 224, size[0] + 225) if s >= 8 and _maxvit_fits(s)]
        nearest = min(fits, key=lambda s: abs(s - size[0])) if fits else 224
        raise ValidationError(
            f"{name} needs an input size whose grid divides into its {_MAXVIT_PARTITION}x{_MAXVIT_PARTITION} attention "
            f"partitions in every block (e.g. {nearest}x{nearest}), got {size[0]}x{size[1]}",
            field="data.image_size",
        )
    return size


def _maxvit_fits(side: int) -> bool:
    def halve(value: int) -> int:  # a 3x3 convolution with stride 2 and padding 1
        return (value - 1) // 2 + 1

    value = halve(side)
    for _ in range(_MAXVIT_BLOCKS):
        value = halve(value)
        if value % _MAXVIT_PARTITION:
            return False
    return True


def vit_patch_size(name: str) -> int | None:
    """The patch size of a ViT (``vit_b_16`` -> 16), ``None`` for other families."""
    match = re.fullmatch(r"vit_\w+?_(\d+)", name)
    return int(match.group(1)) if match else None


def validate_config(config: dict[str, Any], *, model_name: str) -> None:
    """``Architecture.validate``: the input sizes ``model_name`` cannot take, refused when the experiment is saved."""
    model = config.get("model") or {}
    data = config.get("data") or {}
    check_input_size(model_name, bool(model.get("pretrained")), data.get("image_size"))


def declared_min_input_size(name: str) -> tuple[int, int] | None:
    """``Architecture.min_input_size``: a ViT's one patch, else the weights' ``min_size`` where it is a hard limit."""
    patch = vit_patch_size(name)
    if patch is not None:
        return (patch, patch)
    if _family(name) in SOFT_MIN_SIZE_FAMILIES:
        return None
    size = min_input_size(name)
    return size if size[0] > 8 or size[1] > 8 else None


def find_head(model: Any) -> tuple[str, Any]:
    """The layer producing the logits: the last ``nn.Linear``, else the last ``nn.Conv2d`` (squeezenet)."""
    from torch import nn

    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValidationError("Cannot find a classifier head to replace", field="model.architecture")
    return convs[-1]


def replace_head(model: Any, num_classes: int, dropout: float = 0.0) -> str:
    """Swap the logits layer for a freshly initialised one with ``num_classes`` outputs; return its path."""
    from torch import nn

    name, old = find_head(model)
    new: nn.Module
    if isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size, stride=old.stride, padding=old.padding)
    new = new.to(old.weight.device)
    if dropout > 0:
        new = nn.Sequential(nn.Dropout(dropout), new)
    model.set_submodule(name, new)
    return name


def replace_first_conv(model: Any, in_channels: int, average_rgb: bool) -> None:
    """Give the first ``nn.Conv2d`` ``in_channels`` inputs.

    With pretrained weights each new input channel gets the mean of the RGB
    filters scaled by ``3 / in_channels``, so a grey image answers like its RGB copy.
    """
    import torch
    from torch import nn

    name, old = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    ).to(old.weight.device)
    if average_rgb:
        with torch.no_grad():
            mean = old.weight.mean(dim=1, keepdim=True) * (old.in_channels / in_channels)
            new.weight.copy_(mean.expand(-1, in_channels, -1, -1))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    model.set_submodule(name, new)


# -- registration ----------------------------------------------------------------------
def _describe(name: str, weights: Any) -> str:
    if weights is None:
        return f"torchvision {name}"
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {})
    top1 = f", ImageNet top-1 {metrics['acc@1']}%" if "acc@1" in metrics else ""
    return f"torchvision {name} ({weights.meta.get('num_params', 0) / 1e6:.1f}M parameters{top1})"


def architecture_for(name: str) -> Architecture:
    """The ``Architecture`` entry for torchvision model ``name`` (metadata only, nothing is built)."""
    weights = default_weights(name)
    size: tuple[int, int] = (224, 224)
    if weights is not None:
        crop = getattr(weights.transforms(), "crop_size", None)
        if crop:
            size = (int(crop[0]), int(crop[-1]))
    return Architecture(
        name=name,
        build=partial(build_torchvision, model_name=name),
        default_input_size=size,
        has_pretrained=weights is not None,
        description=_describe(name, weights),
        num_parameters=int(weights.meta["num_params"]) if weights is not None and "num_params" in weights.meta else None,
        head_name=head_name_for(name),
        min_input_size=declared_min_input_size(name),
        input_size_multiple=vit_patch_size(name),
        validate=partial(validate_config, model_name=name) if _family(name) in FIXED_SIZE_ARGUMENT else None,
    )


@hookimpl
def register_architectures(registry) -> None:  # type: ignore[no-untyped-def]
    import torchvision.models as tvm

    for name in tvm.list_models(module=tvm):
        registry.add(architecture_for(name))
