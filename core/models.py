"""Turn a model config into a ready ``nn.Module``: the one place core builds networks.

The training engine, evaluation and export all call ``build_model`` so that an
architecture name, local weights and backbone freezing mean the same thing
everywhere. Architectures come from the registry (never from an import
string); local weights are read with ``weights_only=True`` or safetensors, so
a weights file can carry tensors but never code.

Local weights (``model.weights_path``) are loaded by core strictly after
``build``, unless the architecture's ``build`` names a ``weights_path``
parameter: it then receives the resolved path and loads it itself, typically
with ``load_backbone_weights`` (strict on the backbone, a fresh head where
the file's head has another shape). Every load is reported (``LoadReport``)
to ``recording_weight_loads`` blocks, which is how a run records what it
started from in ``reproducibility.json``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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
    :param weights_path: a local state dict (``.pt``/``.pth``/``.ckpt`` or ``.safetensors``). When the
        architecture's ``build`` names a ``weights_path`` parameter (``architecture_loads_weights``) it
        receives the resolved path (``None`` when there is none) and loads it itself; otherwise the file is
        loaded here after building and must match the built network key for key and shape for shape.
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
    path = Path(weights_path).expanduser().resolve() if weights_path is not None else None
    loads_itself = architecture_loads_weights(arch)
    if loads_itself:
        options["weights_path"] = path
    model = arch.build(num_classes, in_channels=in_channels, pretrained=pretrained, dropout=dropout, **options)
    if path is not None and not loads_itself:
        load_weights_file(model, path)
    if freeze_backbone:
        freeze_all_but_head(model, arch)
    return model


def architecture_loads_weights(arch: Architecture) -> bool:
    """Whether ``arch.build`` names a ``weights_path`` parameter, i.e. loads ``model.weights_path`` itself.

    Detected from the signature, as pluggy passes a hook only the arguments it
    names: a ``build`` with just ``**options`` never receives ``weights_path``
    and core loads the file after it, as before 0.3.
    """
    from .plugin_checks import names_parameter

    return names_parameter(arch.build, "weights_path")


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


# -- what a load did --------------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """What loading a weights file into a model did (``load_weights_file``, ``load_backbone_weights``).

    ``skipped`` are the file's keys that were not loaded (head tensors of another
    shape, or head tensors the model does not have); ``reinitialised`` are the
    model's keys that kept their fresh initialisation (its head).
    """

    #: the file read, or ``None`` for a state dict passed in memory
    source: str | None
    #: the model keys that took the file's tensors
    loaded: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    reinitialised: tuple[str, ...] = ()
    #: the head the load treated apart (module names or key prefixes); empty for a strict load
    head: tuple[str, ...] = ()

    def as_record(self) -> dict[str, Any]:
        """Plain data for ``reproducibility.json`` and logs (key counts, and the skipped keys by name)."""
        return {
            "path": self.source,
            "loaded_keys": len(self.loaded),
            "skipped_keys": list(self.skipped),
            "reinitialised_keys": list(self.reinitialised),
            "head": list(self.head),
        }


_recorded_loads: contextvars.ContextVar[list[LoadReport] | None] = contextvars.ContextVar("modelyard_weight_loads", default=None)


@contextlib.contextmanager
def recording_weight_loads() -> Iterator[list[LoadReport]]:
    """Collect the ``LoadReport`` of every weights load inside the block (core's or an architecture's own)."""
    reports: list[LoadReport] = []
    token = _recorded_loads.set(reports)
    try:
        yield reports
    finally:
        _recorded_loads.reset(token)


def _record(report: LoadReport) -> LoadReport:
    reports = _recorded_loads.get()
    if reports is not None:
        reports.append(report)
    return report


def load_weights_file(model: nn.Module, path: Path) -> LoadReport:
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
    log.info("loaded %d tensors from %s", len(state), path)
    return _record(LoadReport(source=str(path), loaded=tuple(sorted(state))))


def load_backbone_weights(
    model: nn.Module,
    weights: str | Path | Mapping[str, torch.Tensor],
    head: str | Sequence[str] | None,
) -> LoadReport:
    """Load a state dict whose head may differ: strict on the backbone, a fresh head where shapes differ.

    The way to start an N-class model from 1000-class ImageNet weights: every
    tensor outside ``head`` must be in the file with the model's shape (a
    missing or unexpected backbone key, or one of another shape, is a
    ``ValidationError`` on ``model.weights_path`` naming the keys, as
    ``load_weights_file`` says it); head tensors of the same shape are
    loaded, and head tensors of another shape (or that only one side has)
    are skipped, so the model's head keeps its fresh initialisation.

    :param weights: a weights file (read like ``model.weights_path``: ``weights_only`` or safetensors,
        a Lightning checkpoint's ``state_dict``) or a state dict.
    :param head: the head's module names or key prefixes (``"fc"``, ``("classifier.1", "AuxLogits")``);
        ``Architecture.head_name`` is the usual one. ``None`` makes the load strict everywhere.
    :returns: the ``LoadReport``; the skipped keys are also logged, and recorded by the run.

    Added in 0.3.
    """
    field = "model.weights_path"
    if isinstance(weights, (str, Path)):
        path: Path | None = Path(weights)
        state = read_state_dict(path)  # type: ignore[arg-type]
        name = path.name  # type: ignore[union-attr]
    else:
        path, name = None, "the state dict"
        state = dict(weights)
    heads = _head_prefixes(head)

    def in_head(key: str) -> bool:
        return any(key == h or key.startswith(h + ".") for h in heads)

    expected = model.state_dict()
    backbone = {key for key in expected if not in_head(key)}
    state = _strip_wrapper_prefix_for(state, backbone, in_head)
    given = {key for key in state if not in_head(key)}
    missing = sorted(backbone - given)
    unexpected = sorted(given - backbone)
    if missing or unexpected:
        raise ValidationError(
            f"Weights file {name} does not fit this architecture's backbone: "
            f"{len(missing)} missing key(s) {_shown(missing)}, {len(unexpected)} unexpected key(s) {_shown(unexpected)}",
            field=field,
            details={"missing_keys": missing[:50], "unexpected_keys": unexpected[:50], "head": list(heads)},
        )
    mismatched = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(backbone)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if mismatched:
        raise ValidationError(
            f"Weights file {name} has backbone tensors of the wrong shape (another architecture or number of channels?): "
            + "; ".join(mismatched[:_SHOWN_KEYS]),
            field=field,
            details={"shape_mismatches": mismatched[:50]},
        )
    head_fits = {
        key for key in state
        if in_head(key) and key in expected and tuple(state[key].shape) == tuple(expected[key].shape)
    }
    skipped = tuple(sorted(key for key in state if in_head(key) and key not in head_fits))
    reinitialised = tuple(sorted(key for key in expected if in_head(key) and key not in head_fits))
    loading = {key: state[key] for key in sorted(backbone | head_fits)}
    model.load_state_dict(loading, strict=False)
    report = LoadReport(source=str(path) if path is not None else None, loaded=tuple(loading), skipped=skipped,
                        reinitialised=reinitialised, head=heads)
    if skipped or reinitialised:
        log.info("loaded %d tensors from %s; head kept freshly initialised: skipped %s (file), reinitialised %s (model)",
                 len(loading), name, ", ".join(skipped) or "nothing", ", ".join(reinitialised) or "nothing")
    else:
        log.info("loaded %d tensors from %s, head included", len(loading), name)
    return _record(report)


def _head_prefixes(head: str | Sequence[str] | None) -> tuple[str, ...]:
    if head is None:
        return ()
    names = (head,) if isinstance(head, str) else tuple(head)
    if not all(isinstance(h, str) and h.strip(".") for h in names):
        raise ValueError(f"head must be module names or key prefixes, got {head!r}")
    return tuple(h.strip(".") for h in names)


def _strip_wrapper_prefix_for(state: dict[str, Any], backbone: set[str], in_head: Any) -> dict[str, Any]:
    """``_strip_wrapper_prefix`` judged on the backbone keys only (the head may differ either way)."""
    if not state or {k for k in state if not in_head(k)} == backbone:
        return state
    prefixes = {key.split(".", 1)[0] for key in state}
    if len(prefixes) == 1 and all("." in key for key in state):
        stripped = {key.split(".", 1)[1]: value for key, value in state.items()}
        if {k for k in stripped if not in_head(k)} == backbone:
            return stripped
    return state


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

    options: dict[str, Any] = {"weights_path": None} if architecture_loads_weights(arch) else {}
    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                model = arch.build(1000, in_channels=3, pretrained=False, dropout=0.0, **options)
            return int(sum(p.numel() for p in model.parameters()))
        except Exception as exc:  # a plugin's build failing must not break the listing
            log.debug("counting parameters of %s on %s failed: %s", arch.name, device, exc)
    log.warning("cannot count parameters of architecture %s: it fails to build", arch.name)
    return None
