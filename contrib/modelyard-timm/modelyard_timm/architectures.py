"""A curated set of timm image classifiers as modelyard architectures (``timm_<timm name>``).

Registration reads only the table below (``MODELS``): no timm import, no
network built, so it costs nothing at server start. The table states what
modelyard needs up front (the classifier head, the input-size limits, the
parameter count at 1000 classes); the package's tests check every row
against timm itself.

``build`` calls ``timm.create_model`` with ``num_classes``, ``in_chans`` and
``drop_rate`` (dropout before the classifier), and ``img_size`` for the
vision transformers, whose position embedding is sized for one input grid.

Weights, never downloaded here:

- ``pretrained: true`` uses timm's ImageNet weights only when they are
  already on this machine: in the Hugging Face hub cache (where timm keeps
  them: ``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``) or, for
  older timm downloads, the torch hub cache. The file found is handed to timm
  as a local file (``pretrained_cfg_overlay={"file": ...}``), so timm adapts
  the head to ``num_classes``, the stem to ``in_chans`` and a ViT's position
  embedding to the input size, and nothing goes to the network. Without the
  file, the experiment is refused when it is saved (422 on
  ``config.model.pretrained``) with the command that downloads it.
- ``model.weights_path`` (a local state dict, e.g. a 1000-class ImageNet
  checkpoint saved by timm) is loaded by ``build`` with
  ``modelyard.core.load_backbone_weights``: strict on the backbone, the head
  left freshly initialised where the file's has another shape; the skipped
  head keys are reported (``LoadReport``, the run's ``reproducibility.json``).

Input sizes a model cannot take are refused when the experiment is saved:
convolutional networks need at least their total stride (32 px: below it the
last stage has no pixel left), vision transformers sides that are multiples
of the patch (16 px), both declared on the ``Architecture`` so core checks
them (422 on ``config.data.image_size``); ``validate`` adds the rules about
weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from modelyard.core import Architecture, ValidationError, load_backbone_weights, loading_cached_weights

PREFIX = "timm_"


@dataclass(frozen=True)
class TimmModel:
    """One curated timm model: what modelyard needs to know without building it."""

    #: timm's model name (``timm.create_model``); the architecture is ``timm_<timm_name>``
    timm_name: str
    family: str
    #: the classifier head's module path (timm's ``pretrained_cfg["classifier"]``)
    head: str
    #: parameters at 1000 classes
    num_parameters: int
    #: the total stride of the last feature map: the smallest side it takes (convolutional networks)
    reduction: int = 32
    #: the patch size of a vision transformer (``None`` for convolutional networks)
    patch: int | None = None
    default_input_size: tuple[int, int] = (224, 224)
    note: str = ""

    @property
    def name(self) -> str:
        return PREFIX + self.timm_name

    @property
    def min_input_size(self) -> tuple[int, int]:
        side = self.patch if self.patch is not None else self.reduction
        return (side, side)

    @property
    def description(self) -> str:
        extra = f", {self.note}" if self.note else ""
        return f"timm {self.timm_name} ({self.num_parameters / 1e6:.1f}M parameters{extra})"


#: The curated models: two of each family a user reaches for first, small ones included for CPUs and tests.
MODELS: tuple[TimmModel, ...] = (
    TimmModel("resnet18", "resnet", head="fc", num_parameters=11_689_512),
    TimmModel("resnet50", "resnet", head="fc", num_parameters=25_557_032),
    TimmModel("efficientnet_b0", "efficientnet", head="classifier", num_parameters=5_288_548),
    TimmModel("mobilenetv3_large_100", "mobilenetv3", head="classifier", num_parameters=5_483_032),
    TimmModel("convnext_atto", "convnext", head="head.fc", num_parameters=3_695_520, note="the smallest ConvNeXt"),
    TimmModel("convnext_tiny", "convnext", head="head.fc", num_parameters=28_589_128),
    TimmModel("vit_tiny_patch16_224", "vit", head="head", num_parameters=5_717_416, patch=16,
              note="input sides must be multiples of 16"),
    TimmModel("deit_tiny_patch16_224", "vit", head="head", num_parameters=5_717_416, patch=16,
              note="DeiT, input sides must be multiples of 16"),
)

MODELS_BY_NAME: Mapping[str, TimmModel] = {spec.name: spec for spec in MODELS}


# -- pretrained weights: only from the local caches ------------------------------------------------------


def _hf_hub_cache() -> Path:
    """Hugging Face's hub cache folder, read from the environment now (not when huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


@dataclass(frozen=True)
class PretrainedSource:
    """Where timm would fetch a model's default pretrained weights, and the local files that would do."""

    #: timm's pretrained tag, e.g. ``resnet18.a1_in1k``
    tag: str
    #: ``timm/resnet18.a1_in1k`` (``None`` when timm has no hub copy)
    hf_repo: str | None
    hf_revision: str | None
    hf_files: tuple[str, ...]
    #: the legacy download URL (torch hub cache), when it is a plain state dict
    url: str | None

    def find(self) -> Path | None:
        """The cached file, looked up on disk only (never the network); ``None`` when none is cached."""
        if self.hf_repo is not None:
            from huggingface_hub import try_to_load_from_cache

            for filename in self.hf_files:
                found = try_to_load_from_cache(self.hf_repo, filename, cache_dir=str(_hf_hub_cache()),
                                               revision=self.hf_revision)
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
        if self.url is not None:
            import torch.hub

            legacy = Path(torch.hub.get_dir()) / "checkpoints" / self.url.rsplit("/", 1)[-1]
            if legacy.is_file():
                return legacy
        return None

    def missing_message(self, architecture: str) -> str:
        where = f"the Hugging Face hub cache ({_hf_hub_cache()})"
        fetch = (f"huggingface-cli download {self.hf_repo} {self.hf_files[0]}" if self.hf_repo is not None
                 else f"python -c \"import timm; timm.create_model('{self.tag}', pretrained=True)\"")
        return (f"Pretrained weights for {architecture} (timm {self.tag}) are not on this machine: looked in {where}"
                + (" and the torch hub cache" if self.url else "")
                + f". modelyard never downloads them during a run; on a machine with internet run `{fetch}` "
                "(HF_HUB_CACHE or HF_HOME choose the cache folder), or set model.weights_path to a local state dict "
                "and model.pretrained to false")


def pretrained_source(spec: TimmModel) -> PretrainedSource:
    """Where timm keeps ``spec``'s default pretrained weights (reads timm's table; nothing is downloaded)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.timm_name)
    if cfg is None:
        raise ValidationError(f"timm has no pretrained weights for {spec.timm_name}", field="model.pretrained")
    repo, revision = None, None
    if cfg.hf_hub_id:
        repo, _, rev = cfg.hf_hub_id.partition("@")
        revision = rev or None
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
    url = cfg.url if cfg.url and cfg.url.endswith((".pth", ".pt", ".bin", ".safetensors")) else None
    tag = f"{spec.timm_name}.{cfg.tag}" if cfg.tag else spec.timm_name
    return PretrainedSource(tag=tag, hf_repo=repo, hf_revision=revision, hf_files=files, url=url)


def cached_pretrained_file(spec: TimmModel) -> Path:
    """The cached pretrained file of ``spec``; ``ValidationError`` on ``model.pretrained`` naming how to get it."""
    source = pretrained_source(spec)
    found = source.find()
    if found is None:
        raise ValidationError(
            source.missing_message(spec.name), field="model.pretrained",
            details={"timm_model": source.tag, "hf_repo": source.hf_repo, "files": list(source.hf_files),
                     "cache_dir": str(_hf_hub_cache())},
        )
    return found


# -- building ---------------------------------------------------------------------------------------------


def build_timm(
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    dropout: float = 0.0,
    *,
    spec: TimmModel,
    weights_path: str | Path | None = None,
    image_size: tuple[int, int] | None = None,
    **options: Any,
) -> Any:
    """``timm.create_model(spec.timm_name, num_classes=..., in_chans=..., drop_rate=...)``; see the module docstring.

    Options modelyard may add later are accepted and ignored (``**options``).
    """
    import timm

    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_channels, "drop_rate": float(dropout)}
    if spec.patch is not None:
        size = tuple(int(v) for v in (image_size or spec.default_input_size))
        check_input_size(spec, size)
        kwargs["img_size"] = size
    if pretrained and weights_path is None:
        cache_file = cached_pretrained_file(spec)
        with loading_cached_weights(spec.name, cache_file):
            model = timm.create_model(spec.timm_name, pretrained=True,
                                      pretrained_cfg_overlay={"file": str(cache_file)}, **kwargs)
    else:
        try:
            model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        except Exception as exc:  # a size or channel count timm refuses
            raise ValidationError(f"timm cannot build {spec.timm_name} with {kwargs}: {exc}",
                                  field="model.architecture") from exc
    if weights_path is not None:
        load_backbone_weights(model, weights_path, head=spec.head)
    return model


def check_input_size(spec: TimmModel, size: tuple[int, ...]) -> None:
    """The same limits core checks from the declaration, for a ``build`` called directly (``data.image_size``)."""
    height, width = int(size[0]), int(size[1])
    low_h, low_w = spec.min_input_size
    if height < low_h or width < low_w:
        raise ValidationError(f"{spec.name} needs an input of at least {low_h}x{low_w} pixels, got {height}x{width}",
                              field="data.image_size")
    if spec.patch is not None and (height % spec.patch or width % spec.patch):
        raise ValidationError(
            f"{spec.name} cuts the image into {spec.patch}x{spec.patch} patches: both sides of the input must be "
            f"multiples of {spec.patch}, got {height}x{width}", field="data.image_size")


def validate_config(config: dict[str, Any], *, spec: TimmModel) -> None:
    """``Architecture.validate``, when an experiment is saved (after core's checks of the declared input limits).

    Refuses ``pretrained`` without the weights on this machine, and
    ``pretrained`` together with ``weights_path`` (two different starts).
    """
    model = config.get("model") or {}
    data = config.get("data") or {}
    size = data.get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        check_input_size(spec, tuple(size))
    if model.get("pretrained") and model.get("weights_path"):
        raise ValidationError(
            f"model.pretrained and model.weights_path both say where {spec.name} starts from: set "
            "model.pretrained to false to start from the file, or drop model.weights_path",
            field="model.weights_path")
    if model.get("pretrained"):
        cached_pretrained_file(spec)


def architecture_for(spec: TimmModel) -> Architecture:
    """The ``Architecture`` entry of one curated model (metadata only, nothing is built)."""
    return Architecture(
        name=spec.name,
        build=partial(build_timm, spec=spec),
        default_input_size=spec.default_input_size,
        has_pretrained=True,
        description=spec.description,
        num_parameters=spec.num_parameters,
        head_name=spec.head,
        min_input_size=spec.min_input_size,
        input_size_multiple=spec.patch,
        validate=partial(validate_config, spec=spec),
    )


def architectures() -> list[Architecture]:
    return [architecture_for(spec) for spec in MODELS]
