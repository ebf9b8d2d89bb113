"""torchvision architectures: cheap registration, head and stem replacement, pretrained weights offline."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from modelyard.core.errors import ValidationError
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.registry import ArchitectureRegistry
from modelyard.plugins import torchvision_models
from modelyard.plugins.torchvision_models import HEAD_BY_FAMILY, default_weights, find_head, weights_cache_file
from modelyard.testing import check_architecture, single_threaded


@pytest.fixture(scope="module")
def registry() -> ArchitectureRegistry:
    host = PluginHost(disabled=set())
    host.add_plugin(torchvision_models, name="torchvision_models")
    return host.architectures


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache under ``TORCH_HOME`` and a network that is down (the download boundary)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_every_torchvision_classification_model_is_registered(registry: ArchitectureRegistry) -> None:
    expected = set(tvm.list_models(module=tvm))
    assert len(expected) >= 80
    assert set(registry.names()) == expected


def test_registration_builds_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("registration must not build models")

    monkeypatch.setattr(tvm, "get_model", forbidden)
    fresh = ArchitectureRegistry()
    torchvision_models.register_architectures(fresh)
    assert len(fresh) == len(tvm.list_models(module=tvm))


def test_metadata_comes_from_torchvision_weights(registry: ArchitectureRegistry) -> None:
    resnet = registry.get("resnet18")
    assert (resnet.default_input_size, resnet.has_pretrained, resnet.num_parameters, resnet.head_name) == (
        (224, 224), True, 11_689_512, "fc"
    )
    assert resnet.tasks == ("classification",)
    assert "ImageNet top-1 69.758%" in resnet.description
    assert registry.get("inception_v3").default_input_size == (299, 299)
    assert registry.get("efficientnet_b3").default_input_size == (300, 300)
    assert registry.get("vit_h_14").default_input_size == (518, 518)


def _head_size(module: nn.Module) -> int:
    layer = module[-1] if isinstance(module, nn.Sequential) else module
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels  # type: ignore[return-value]


def test_declared_head_is_the_layer_build_replaces_in_every_family(registry: ArchitectureRegistry) -> None:
    """Checks HEAD_BY_FAMILY against torchvision itself, on the smallest model of each family.

    Built on the meta device (shapes only, no memory); regnet cannot build there and uses the CPU.
    """
    assert [name for name in registry.names() if registry.get(name).head_name is None] == []
    smallest: dict[str, str] = {}
    for name in registry.names():
        family = next(prefix for prefix, _ in HEAD_BY_FAMILY if name.startswith(prefix))
        if family not in smallest or registry.get(name).num_parameters < registry.get(smallest[family]).num_parameters:
            smallest[family] = name
    assert len(smallest) == len(HEAD_BY_FAMILY)
    wrong = {}
    for name in smallest.values():
        arch = registry.get(name)
        with torch.device("cpu" if name.startswith("regnet") else "meta"):
            model = arch.build(7)
        head_path, _ = find_head(model)
        if head_path != arch.head_name or _head_size(model.get_submodule(arch.head_name)) != 7:
            wrong[name] = (arch.head_name, head_path)
    assert wrong == {}


def test_dropout_goes_in_front_of_the_new_head(registry: ArchitectureRegistry) -> None:
    model = registry.get("resnet18").build(4, dropout=0.3)
    assert isinstance(model.fc, nn.Sequential)
    assert isinstance(model.fc[0], nn.Dropout) and model.fc[0].p == 0.3
    assert model.fc[1].out_features == 4


@pytest.mark.parametrize(("name", "size"), [("resnet18", 32), ("googlenet", 32)])
def test_one_input_channel_replaces_the_first_convolution(registry: ArchitectureRegistry, name: str, size: int) -> None:
    check_architecture(registry.get(name), num_classes=(3,), input_size=(size, size), in_channels=1)
    model = registry.get(name).build(3, in_channels=1)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1


def test_vit_takes_its_input_size_from_the_image_size_option(registry: ArchitectureRegistry) -> None:
    with single_threaded():
        model = registry.get("vit_b_16").build(3, image_size=(48, 48))
        assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3)
    with pytest.raises(ValidationError, match="vit_b_16 needs a square input size, got 48x32") as caught:
        registry.get("vit_b_16").build(3, image_size=(48, 32))
    assert caught.value.field == "data.image_size"


def test_unknown_build_option_is_refused(registry: ArchitectureRegistry) -> None:
    with pytest.raises(ValidationError, match="resnet18 does not take option 'depth'"):
        registry.get("resnet18").build(3, depth=5)


def test_pretrained_weights_not_cached_and_no_network_name_the_missing_file(
    registry: ArchitectureRegistry, offline_hub: Path
) -> None:
    with pytest.raises(ValidationError) as caught:
        registry.get("resnet18").build(3, pretrained=True)
    error = caught.value
    assert error.field == "model.pretrained"
    assert error.message.startswith(
        f"Pretrained weights for resnet18 are not available: resnet18-f37072fd.pth is not in the torch hub cache ({offline_hub})"
    )
    assert "URLError" in error.message and "set model.pretrained to false" in error.message
    assert error.details["file"] == "resnet18-f37072fd.pth"
    assert error.details["cache_dir"] == str(offline_hub)
    assert not (offline_hub / "resnet18-f37072fd.pth").exists()


def test_pretrained_vit_refuses_another_input_size_before_any_download(registry: ArchitectureRegistry, offline_hub: Path) -> None:
    with pytest.raises(ValidationError, match="Pretrained vit_b_16 expects 224x224 input, got 32x32"):
        registry.get("vit_b_16").build(3, pretrained=True, image_size=(32, 32))


def _cache_reference_weights(name: str) -> dict[str, torch.Tensor]:
    """Write a state dict with torchvision's shapes where the hub cache keeps ``name``'s DEFAULT weights."""
    torch.manual_seed(3)
    state = tvm.get_model(name, weights=None).state_dict()
    target = weights_cache_file(default_weights(name))
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, target)
    return state


def test_pretrained_weights_are_loaded_from_the_hub_cache_without_network(
    registry: ArchitectureRegistry, offline_hub: Path
) -> None:
    state = _cache_reference_weights("squeezenet1_1")
    assert weights_cache_file(default_weights("squeezenet1_1")) == offline_hub / "squeezenet1_1-b8a52dc0.pth"
    model = registry.get("squeezenet1_1").build(5, pretrained=True)
    assert torch.equal(model.features[0].weight, state["features.0.weight"])
    assert torch.equal(model.features[12].expand3x3.weight, state["features.12.expand3x3.weight"])
    assert model.classifier[1].out_channels == 5
    with single_threaded():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_pretrained_grey_model_averages_the_rgb_filters_of_the_first_convolution(
    registry: ArchitectureRegistry, offline_hub: Path
) -> None:
    state = _cache_reference_weights("squeezenet1_1")
    model = registry.get("squeezenet1_1").build(2, in_channels=1, pretrained=True)
    expected = state["features.0.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(model.features[0].weight, expected, atol=1e-6)
    assert torch.equal(model.features[0].bias, state["features.0.bias"])


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("code ran from the hub cache",))


def test_tampered_hub_cache_file_is_refused_without_running_its_code(
    registry: ArchitectureRegistry, offline_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = weights_cache_file(default_weights("squeezenet1_1"))
    target.parent.mkdir(parents=True)
    with open(target, "wb") as handle:
        pickle.dump({"features.0.weight": _Payload()}, handle, protocol=2)
    with pytest.raises(ValidationError) as caught:
        registry.get("squeezenet1_1").build(2, pretrained=True)
    assert caught.value.message.startswith("Pretrained weights file squeezenet1_1-b8a52dc0.pth for squeezenet1_1 cannot be loaded safely")
    assert "code ran" not in capsys.readouterr().out
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in __import__("os").environ  # the guard is lifted afterwards


# -- model.weights_path with another head, input sizes refused at save time (0.3) ----------------------


def test_a_1000_class_imagenet_state_dict_starts_a_3_class_resnet18_with_a_fresh_head(
    registry: ArchitectureRegistry, tmp_path: Path
) -> None:
    from modelyard.core.models import architecture_loads_weights, build_model, recording_weight_loads

    torch.manual_seed(11)
    imagenet = tvm.resnet18(weights=None).state_dict()  # torchvision's exact keys and shapes, random values
    assert imagenet["fc.weight"].shape == (1000, 512)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(imagenet, path)
    assert architecture_loads_weights(registry.get("resnet18"))

    with recording_weight_loads() as reports:
        model = build_model(registry, "resnet18", num_classes=3, weights_path=path)

    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, imagenet[key]), key
    assert model.fc.weight.shape == (3, 512) and model.fc.bias.shape == (3,)
    [report] = reports
    assert report.source == str(path.resolve())
    assert report.skipped == ("fc.bias", "fc.weight") and report.reinitialised == ("fc.bias", "fc.weight")
    assert len(report.loaded) == len(imagenet) - 2
    with single_threaded():
        assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_a_weights_file_with_another_backbone_is_a_validation_error_naming_the_keys(
    registry: ArchitectureRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(tvm.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValidationError) as caught:
        registry.get("resnet18").build(3, weights_path=path)
    error = caught.value
    assert error.field == "model.weights_path"
    assert error.message.startswith("Weights file resnet34.pth does not fit this architecture's backbone: 0 missing key(s)")
    assert "layer1.2.conv1.weight" in error.details["unexpected_keys"]


def test_googlenet_imagenet_weights_skip_the_auxiliary_heads(registry: ArchitectureRegistry, tmp_path: Path) -> None:
    from modelyard.core.models import recording_weight_loads

    imagenet = tvm.googlenet(weights=None, aux_logits=True, init_weights=True).state_dict()
    path = tmp_path / "googlenet.pth"
    torch.save(imagenet, path)
    with recording_weight_loads() as reports:
        model = registry.get("googlenet").build(4, weights_path=path)
    assert torch.equal(model.conv1.conv.weight, imagenet["conv1.conv.weight"])
    assert model.fc.out_features == 4
    skipped = reports[0].skipped
    assert {"fc.weight", "fc.bias"} <= set(skipped) and any(k.startswith("aux1.") for k in skipped)


@pytest.mark.parametrize(
    ("name", "size", "pretrained", "message"),
    [
        ("vit_b_16", (40, 40), False, "vit_b_16 needs an input size whose sides are multiples of 16, got 40x40 (e.g. 48x48)"),
        ("vit_b_16", (8, 8), False, "vit_b_16 needs an input of at least 16x16 pixels, got 8x8"),
        ("vit_b_16", (48, 32), False, "vit_b_16 needs a square input size, got 48x32"),
        ("vit_b_16", (64, 64), True, "Pretrained vit_b_16 expects 224x224 input, got 64x64"),
        ("maxvit_t", (256, 256), False, "maxvit_t needs an input size whose grid divides into its 7x7 attention "
                                        "partitions in every block (e.g. 224x224), got 256x256"),
        ("inception_v3", (64, 64), False, "inception_v3 needs an input of at least 75x75 pixels, got 64x64"),
        ("alexnet", (32, 32), False, "alexnet needs an input of at least 63x63 pixels, got 32x32"),
    ],
)
def test_input_sizes_a_family_cannot_take_are_refused_before_anything_is_built(
    registry: ArchitectureRegistry, name: str, size: tuple[int, int], pretrained: bool, message: str
) -> None:
    from modelyard.core.plugin_checks import check_architecture_config

    config = {"model": {"architecture": name, "pretrained": pretrained}, "data": {"image_size": list(size)}}
    with pytest.raises(ValidationError) as caught:
        check_architecture_config(registry.get(name), config)
    assert caught.value.message == message
    assert caught.value.field == "config.data.image_size"


@pytest.mark.parametrize(
    ("name", "size"),
    [("vit_b_16", (48, 48)), ("maxvit_t", (224, 224)), ("maxvit_t", (448, 448)), ("swin_t", (64, 64)),
     ("efficientnet_v2_s", (16, 16)), ("resnet18", (8, 8)), ("inception_v3", (75, 75)), ("densenet121", (32, 32))],
)
def test_input_sizes_a_family_takes_are_accepted(registry: ArchitectureRegistry, name: str, size: tuple[int, int]) -> None:
    from modelyard.core.plugin_checks import check_architecture_config

    check_architecture_config(registry.get(name), {"model": {"pretrained": False}, "data": {"image_size": list(size)}})


def test_declared_minimum_sizes_are_hard_limits_of_the_network(registry: ArchitectureRegistry) -> None:
    """One below the declared minimum fails to run, the minimum runs (what the declaration is worth)."""
    with single_threaded(), torch.no_grad():
        for name in ("alexnet", "squeezenet1_1", "densenet121"):
            min_h, min_w = registry.get(name).min_input_size  # type: ignore[misc]
            model = registry.get(name).build(2).eval()
            assert model(torch.randn(1, 3, min_h, min_w)).shape == (1, 2)
            with pytest.raises(RuntimeError):
                model(torch.randn(1, 3, min_h - 1, min_w - 1))
