"""The curated timm architectures: modelyard's contract, the table against timm, sizes, weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelyard.core import ValidationError
from modelyard.testing import check_architecture, check_installed
from modelyard_timm.architectures import MODELS, MODELS_BY_NAME, PREFIX

NAMES = [spec.name for spec in MODELS]


def small_size(name: str) -> tuple[int, int]:
    """The smallest input each model takes: the whole network runs, the test stays fast."""
    return MODELS_BY_NAME[name].min_input_size if MODELS_BY_NAME[name].patch is None else (32, 32)


def test_the_installed_plugin_loads_as_the_server_loads_it() -> None:
    row = check_installed("timm")
    assert row["source"] == "modelyard-timm"
    assert row["registered"]["architectures"] == sorted(NAMES)
    assert row["registered"]["exporters"] == ["onnx_int8"]


def test_the_curated_set_covers_resnet_efficientnet_mobilenet_convnext_and_vit(host) -> None:
    families = {spec.family for spec in MODELS}
    assert {"resnet", "efficientnet", "mobilenetv3", "convnext", "vit"} <= families
    assert all(name.startswith(PREFIX) for name in host.architectures.names())
    assert sorted(host.architectures.names()) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_architecture_honours_modelyards_contract_at_its_smallest_size(host, name: str) -> None:
    check_architecture(host.architectures.get(name), num_classes=(3, 10), input_size=small_size(name), batch=2)


@pytest.mark.parametrize("spec", MODELS, ids=[spec.name for spec in MODELS])
def test_the_static_table_matches_timm(spec) -> None:
    """Head, parameter count and default input size are stated without building; here timm confirms them."""
    import timm

    cfg = timm.models.get_pretrained_cfg(spec.timm_name)
    assert cfg.classifier == spec.head
    assert tuple(cfg.input_size[1:]) == spec.default_input_size
    with torch.device("meta"):
        model = timm.create_model(spec.timm_name, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == spec.num_parameters
    assert model.get_submodule(spec.head) is model.get_classifier()
    assert model.feature_info[-1]["reduction"] == (spec.patch or spec.reduction)


def test_registering_imports_neither_timm_nor_onnxruntime() -> None:
    code = ("import sys; from modelyard.testing import registered; import modelyard_timm.plugin as p; registered(p); "
            "print(sorted(m for m in ('timm', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_build_passes_classes_channels_dropout_and_a_vits_input_size(host) -> None:
    net = host.architectures.get("timm_resnet18").build(5, in_channels=1, dropout=0.25, image_size=(40, 40))
    assert net.fc.out_features == 5 and net.conv1.in_channels == 1 and net.drop_rate == 0.25
    vit = host.architectures.get("timm_vit_tiny_patch16_224").build(4, image_size=(32, 48))
    assert vit.patch_embed.img_size == (32, 48) and vit.pos_embed.shape[1] == 1 + 2 * 3
    assert vit(torch.zeros(1, 3, 32, 48)).shape == (1, 4)


def test_a_1000_class_weights_file_starts_a_3_class_model_with_the_files_backbone(host, tmp_path: Path,
                                                                                  save_imagenet_weights) -> None:
    from modelyard.core.models import recording_weight_loads

    weights = tmp_path / "convnext_atto-imagenet.safetensors"
    state = save_imagenet_weights(weights, "convnext_atto", seed=1)
    with recording_weight_loads() as reports:
        net = host.architectures.get("timm_convnext_atto").build(3, weights_path=weights)
    got = net.state_dict()
    assert got["head.fc.weight"].shape == (3, 320)
    backbone = [key for key in state if not key.startswith("head.fc.")]
    assert backbone and all(torch.equal(got[key], state[key]) for key in backbone)
    (report,) = reports
    assert report.skipped == ("head.fc.bias", "head.fc.weight")
    assert report.reinitialised == ("head.fc.bias", "head.fc.weight")
    assert report.head == ("head.fc",) and len(report.loaded) == len(backbone)


def test_a_weights_file_of_another_architecture_is_refused_naming_the_keys(host, tmp_path: Path, save_imagenet_weights) -> None:
    weights = tmp_path / "resnet18.safetensors"
    save_imagenet_weights(weights, "resnet18")
    with pytest.raises(ValidationError, match="backbone") as caught:
        host.architectures.get("timm_convnext_atto").build(3, weights_path=weights)
    assert caught.value.field == "model.weights_path"


def write_hub_cache(cache: Path, repo: str, state_file_writer) -> Path:  # type: ignore[no-untyped-def]
    """A Hugging Face hub cache entry as ``hf_hub_download`` leaves it: refs/main -> snapshots/<commit>/file."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    target = folder / "snapshots" / commit / "model.safetensors"
    state_file_writer(target)
    return target


def test_pretrained_uses_timms_weights_from_the_local_hub_cache_only(host, tmp_path: Path, monkeypatch,
                                                                   save_imagenet_weights) -> None:
    import timm

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    repo = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    state: dict[str, torch.Tensor] = {}
    write_hub_cache(cache, repo, lambda path: state.update(save_imagenet_weights(path, "resnet18", seed=2)))
    net = host.architectures.get("timm_resnet18").build(3, in_channels=3, pretrained=True)
    got = net.state_dict()
    assert got["fc.weight"].shape == (3, 512)
    assert all(torch.equal(got[key], state[key]) for key in state if not key.startswith("fc."))


def test_pretrained_without_cached_weights_says_how_to_get_them(host) -> None:
    with pytest.raises(ValidationError) as caught:
        host.architectures.get("timm_efficientnet_b0").build(3, pretrained=True)
    error = caught.value
    assert error.field == "model.pretrained"
    assert "huggingface-cli download timm/efficientnet_b0" in error.message and "model.weights_path" in error.message


@pytest.mark.parametrize(("name", "size", "words"), [
    ("timm_vit_tiny_patch16_224", (40, 48), "multiples of 16"),
    ("timm_resnet18", (8, 8), "at least 32x32"),
])
def test_build_refuses_an_input_size_the_model_cannot_take(host, name: str, size: tuple[int, int], words: str) -> None:
    with pytest.raises(ValidationError, match=words) as caught:
        host.architectures.get(name).validate({"model": {"architecture": name}, "data": {"image_size": list(size)}})
    assert caught.value.field == "data.image_size"


@pytest.mark.parametrize("name", ["timm_convnext_atto", "timm_vit_tiny_patch16_224"])
def test_freeze_backbone_leaves_only_timms_classifier_trainable(host, name: str) -> None:
    from modelyard.core.models import build_model

    net = build_model(host.architectures, name, 3, freeze_backbone=True, image_size=(32, 32))
    trainable = sorted(key for key, parameter in net.named_parameters() if parameter.requires_grad)
    head = MODELS_BY_NAME[name].head
    assert trainable == [f"{head}.bias", f"{head}.weight"]
