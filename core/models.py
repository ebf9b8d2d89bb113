"""Turn a model config into a ready ``nn.Module``: the one place core builds networks.

The training engine, evaluation and export all call ``build_model`` so that an
architecture name, local weights and backbone freezing mean the same thing
everywhere. Architectures come from the registry (never from an import
string); local weights are read with ``weights_only=True`` or safetensors, so
a weights file can carry tensors but never code.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .plugin_types import Architecture
from .registry import ArchitectureRegistry

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

#: How many key names an error message lists before it says "...".
_SHOWN_KEYS = 5


def build_model(
    registry: ArchitectureRegistry,
    name: str,
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    dropout: float = 0.0,
    weights_path: str | Path | None = None,
    freeze_backbone: bool = False,
    image_size: tuple[int, int] | None = None,
) -> nn.Module:
    """Build architecture ``name`` for ``num_classes`` outputs, then apply local weights and freezing.

    :param registry: where architectures are looked up (``services.plugins.architectures``).
    :param pretrained: the architecture's own pretrained weights (raises ``ValidationError`` if it has none).
    :param weights_path: a local state dict (``.pt``/``.pth``/``.ckpt`` or ``.safetensors``) loaded
        after building; it must match the built network key for key and shape for shape.
    :param freeze_backbone: train only the head (``Architecture.head_name``).
    :param image_size: ``(height, width)`` the network will be fed; passed as the ``image_size``
        option for families with a fixed input size (ViT, MaxViT); others ignore it.
    Errors name the config field (``model.architecture``, ``model.weights_path`` ...).
    """
    arch = registry.get(name, field="model.architecture")
    _check_build_args(num_classes, in_channels, dropout)
    options: dict[str, Any] = {}
    if image_size is not None:
        options["image_size"] = (int(image_size[0]), int(image_size[1]))
    model = arch.build(num_classes, in_channels=in_channels, pretrained=pretrained, dropout=dropout, **options)
    if weights_path is not None:
        load_weights_file(model, Path(weights_path))
    if freeze_backbone:
        freeze_all_but_head(model, arch)
    return model


def _check_build_args(num_classes: int, in_channels: int, dropout: float) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValidationError(f"num_classes must be a positive integer, got {num_classes!r}", field="num_classes")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or not 1 <= in_channels <= 64:
        raise ValidationError(f"in_channels must be an integer from 1 to 64, got {in_channels!r}", field="data.channels")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0.0 <= dropout < 1.0:
        raise ValidationError(f"dropout must be a number in [0, 1), got {dropout!r}", field="model.dropout")


# -- local weights -------------------------------------------------------------
def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``path`` without running code from it.

    ``.safetensors`` files go through safetensors; anything else through
    ``torch.load(weights_only=True)``. A Lightning checkpoint is accepted: its
    ``state_dict`` entry is used.
    """
    import torch

    field = "model.weights_path"
    if not path.is_file():
        raise ValidationError(f"Weights file not found: {path}", field=field, details={"path": str(path)})
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that needs code (refused by weights_only)
        raise ValidationError(
            f"Weights file {path.name} cannot be read as plain tensors: {type(exc).__name__}: {_first_line(exc)}",
            field=field,
            details={"path": str(path)},
        ) from exc
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise ValidationError(
            f"Weights file {path.name} does not hold a state dict (a mapping of names to tensors)",
            field=field,
            details={"path": str(path)},
        )
    return dict(loaded)


def load_weights_file(model: nn.Module, path: Path) -> None:
    """Load a local state dict into ``model`` strictly, explaining any mismatch.

    A checkpoint saved from a wrapper (``net.conv1.weight`` for ``conv1.weight``) is
    accepted when stripping one leading component makes every key match.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    state = _strip_wrapper_prefix(state, set(expected))
    field = "model.weights_path"
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValidationError(
            f"Weights file {path.name} does not fit this architecture: "
            f"{len(missing)} missing key(s) {_shown(missing)}, {len(unexpected)} unexpected key(s) {_shown(unexpected)}",
            field=field,
            details={"missing_keys": missing[:50], "unexpected_keys": unexpected[:50]},
        )
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if tuple(state[key].shape) != tuple(value.shape)
    ]
    if mismatched:
        raise ValidationError(
            f"Weights file {path.name} has tensors of the wrong shape (different num_classes or channels?): "
            + "; ".join(mismatched[:_SHOWN_KEYS]),
            field=field,
            details={"shape_mismatches": mismatched[:50]},
        )
    model.load_state_dict(state, strict=True)


def _strip_wrapper_prefix(state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    if set(state) == expected or not state:
        return state
    prefixes = {key.split(".", 1)[0] for key in state}
    if len(prefixes) == 1 and all("." in key for key in state):
        stripped = {key.split(".", 1)[1]: value for key, value in state.items()}
        if set(stripped) == expected:
            return stripped
    return state


def _shown(keys: list[str]) -> str:
    if not keys:
        return ""
    more = " ..." if len(keys) > _SHOWN_KEYS else ""
    return "(" + ", ".join(keys[:_SHOWN_KEYS]) + more + ")"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


# -- freezing ------------------------------------------------------------------
def freeze_all_but_head(model: nn.Module, arch: Architecture) -> None:
    """Stop gradients everywhere except the architecture's classifier head.

    BatchNorm statistics still update in train mode; a fine-tuning callback may
    put the backbone in eval mode if it wants them frozen too.
    """
    if not arch.head_name:
        raise ValidationError(
            f"Architecture '{arch.name}' does not declare its classifier head, so freeze_backbone is not supported",
            field="model.freeze_backbone",
        )
    try:
        model.get_submodule(arch.head_name)
    except AttributeError as exc:
        raise ValidationError(
            f"Architecture '{arch.name}' declares head '{arch.head_name}', which the built model lacks",
            field="model.freeze_backbone",
        ) from exc
    prefix = arch.head_name + "."
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(prefix)


# -- parameter counts ------------------------------------------------------------
#: ``id(arch) -> (arch, count)``; keeping ``arch`` alive keeps its id from being reused.
_count_cache: dict[int, tuple[Architecture, int | None]] = {}
_count_lock = threading.Lock()


def parameter_count(arch: Architecture) -> int | None:
    """Parameters of ``arch`` built for 1000 classes: declared, else counted once and cached.

    Counting builds on the ``meta`` device (shapes only, no memory, milliseconds);
    an architecture that cannot build there is built on the CPU. ``None`` if it
    cannot be built at all (the listing must not fail because of one plugin).
    """
    if arch.num_parameters is not None:
        return arch.num_parameters
    with _count_lock:
        cached = _count_cache.get(id(arch))
    if cached is not None:
        return cached[1]
    count = _count_parameters(arch)
    with _count_lock:
        _count_cache[id(arch)] = (arch, count)
    return count


def _count_parameters(arch: Architecture) -> int | None:
    import torch

    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = arch.build(1000, in_channels=3, pretrained=False, dropout=0.0)
            return int(sum(p.numel() for p in model.parameters()))
        except Exception as exc:  # a plugin's build failing must not break the listing
            log.debug("counting parameters of %s on %s failed: %s", arch.name, device, exc)
    log.warning("cannot count parameters of architecture %s: it fails to build", arch.name)
    return None
