"""``build_model``: registry lookup, safe local weights, freezing, parameter counts."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modelyard.core import Architecture
from modelyard.core.errors import UnknownArchitectureError, ValidationError
from modelyard.core.models import build_model, parameter_count
from modelyard.core.plugin_manager import PluginHost
from modelyard.plugins import simple_cnn


@pytest.fixture(scope="module")
def registry():  # type: ignore[no-untyped-def]
    host = PluginHost(disabled=set())
    host.add_plugin(simple_cnn, name="simple_cnn")
    return host.architectures


def _state(num_classes: int = 3, in_channels: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return simple_cnn.build_simple_cnn(num_classes, in_channels=in_channels).state_dict()


def test_build_model_returns_the_architecture_for_num_classes_and_channels(registry) -> None:  # type: ignore[no-untyped-def]
    model = build_model(registry, "simple_cnn", num_classes=5, in_channels=1, dropout=0.2)
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 5)


def test_unknown_architecture_names_the_config_field_and_alternatives(registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownArchitectureError) as caught:
        build_model(registry, "resnet9000", num_classes=3)
    assert caught.value.details["field"] == "model.architecture"
    assert caught.value.details["available"] == ["simple_cnn"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"num_classes": 3, "in_channels": 0}, "data.channels"),
        ({"num_classes": 3, "dropout": 1.0}, "model.dropout"),
        ({"num_classes": 3, "dropout": -0.1}, "model.dropout"),
    ],
)
def test_bad_build_arguments_are_validation_errors(registry, kwargs, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        build_model(registry, "simple_cnn", **kwargs)
    assert caught.value.field == field


def test_pretrained_without_weights_is_refused_by_the_architecture(registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="simple_cnn has no pretrained weights"):
        build_model(registry, "simple_cnn", num_classes=3, pretrained=True)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_path_loads_a_local_state_dict(registry, tmp_path: Path, suffix: str) -> None:  # type: ignore[no-untyped-def]
    state = _state()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    model = build_model(registry, "simple_cnn", num_classes=3, weights_path=path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_weights_path_accepts_a_lightning_style_checkpoint_with_a_wrapper_prefix(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = _state()
    path = tmp_path / "best.ckpt"
    torch.save({"epoch": 3, "state_dict": {f"net.{k}": v for k, v in state.items()}}, path)
    model = build_model(registry, "simple_cnn", num_classes=3, weights_path=path)
    assert torch.equal(model.state_dict()["1.1.weight"], state["1.1.weight"])


def test_missing_weights_file_is_a_validation_error_naming_the_path(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        build_model(registry, "simple_cnn", num_classes=3, weights_path=tmp_path / "nope.pt")
    assert caught.value.field == "model.weights_path"
    assert caught.value.message == f"Weights file not found: {tmp_path / 'nope.pt'}"


def test_weights_with_other_keys_are_refused_listing_missing_and_unexpected(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    state = _state()
    state["extra.weight"] = state.pop("1.1.weight")
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(ValidationError) as caught:
        build_model(registry, "simple_cnn", num_classes=3, weights_path=path)
    assert caught.value.message == (
        "Weights file w.pt does not fit this architecture: 1 missing key(s) (1.1.weight), 1 unexpected key(s) (extra.weight)"
    )


def test_weights_for_another_class_count_are_refused_naming_the_shape(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "w10.pt"
    torch.save(_state(num_classes=10), path)
    with pytest.raises(ValidationError, match=r"1\.1\.weight: file \(10, 128\) vs model \(3, 128\)") as caught:
        build_model(registry, "simple_cnn", num_classes=3, weights_path=path)
    assert caught.value.field == "model.weights_path"


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("code ran",))


def test_weights_file_that_needs_code_to_load_is_refused(registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"1.1.weight": _Payload()}, handle, protocol=2)
    with pytest.raises(ValidationError, match="cannot be read as plain tensors") as caught:
        build_model(registry, "simple_cnn", num_classes=3, weights_path=path)
    assert caught.value.field == "model.weights_path"
    assert "code ran" not in capsys.readouterr().out


def test_weights_file_that_is_not_a_state_dict_is_refused(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValidationError, match="does not hold a state dict"):
        build_model(registry, "simple_cnn", num_classes=3, weights_path=path)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not safetensors")
    with pytest.raises(ValidationError, match="garbage.safetensors cannot be read as plain tensors"):
        build_model(registry, "simple_cnn", num_classes=3, weights_path=garbage)


def test_freeze_backbone_leaves_only_the_head_trainable(registry) -> None:  # type: ignore[no-untyped-def]
    model = build_model(registry, "simple_cnn", num_classes=4, freeze_backbone=True)
    trainable = sorted(name for name, p in model.named_parameters() if p.requires_grad)
    assert trainable == ["1.1.bias", "1.1.weight"]
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("1."))


def test_freeze_backbone_needs_a_declared_head() -> None:
    host = PluginHost(disabled=set())
    host.architectures.add(Architecture(name="headless", build=simple_cnn.build_simple_cnn))
    with pytest.raises(ValidationError, match="does not declare its classifier head") as caught:
        build_model(host.architectures, "headless", num_classes=3, freeze_backbone=True)
    assert caught.value.field == "model.freeze_backbone"


def test_parameter_count_is_declared_or_counted_on_the_meta_device_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting_build(num_classes, in_channels=3, pretrained=False, dropout=0.0, **options):  # type: ignore[no-untyped-def]
        calls.append(str(torch.empty(0).device))
        return torch.nn.Linear(10, num_classes)

    arch = Architecture(name="lin", build=counting_build)
    assert parameter_count(arch) == 10 * 1000 + 1000
    assert parameter_count(arch) == 10 * 1000 + 1000
    assert calls == ["meta"]
    assert parameter_count(Architecture(name="declared", build=counting_build, num_parameters=42)) == 42


def test_parameter_count_of_an_architecture_that_cannot_build_is_none() -> None:
    def broken(num_classes, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("no")

    assert parameter_count(Architecture(name="broken", build=broken)) is None


# -- weights_path given to build, load_backbone_weights (0.3) ------------------------------------


def _own_loader(calls: list[object]):  # type: ignore[no-untyped-def]
    """An architecture whose build loads ``weights_path`` itself with ``load_backbone_weights``."""
    from modelyard.core import load_backbone_weights

    def build(num_classes, in_channels=3, pretrained=False, dropout=0.0, weights_path=None, **options):  # type: ignore[no-untyped-def]
        calls.append(weights_path)
        model = simple_cnn.build_simple_cnn(num_classes, in_channels=in_channels, dropout=dropout)
        if weights_path is not None:
            load_backbone_weights(model, weights_path, head="1")
        return model

    return Architecture(name="own_loader", build=build, head_name="1")


def test_a_build_that_names_weights_path_receives_the_resolved_path_and_core_loads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelyard.core import models
    from modelyard.core.registry import ArchitectureRegistry

    calls: list[object] = []
    registry = ArchitectureRegistry()
    registry.add(_own_loader(calls))
    path = tmp_path / "ten.pt"
    torch.save(_state(num_classes=10), path)
    monkeypatch.setattr(models, "load_weights_file", lambda *a: pytest.fail("core loaded the file again"))
    monkeypatch.chdir(tmp_path)

    model = build_model(registry, "own_loader", num_classes=3, weights_path="ten.pt")
    build_model(registry, "own_loader", num_classes=3)

    assert calls == [path.resolve(), None]  # absolute, resolved; None without a file
    assert model[1][1].out_features == 3
    assert torch.equal(model[0][0][0].weight, _state(num_classes=10)["0.0.0.weight"])
    assert models.architecture_loads_weights(registry.get("own_loader"))


def test_a_build_with_only_options_never_receives_weights_path_and_core_loads_strictly(registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from modelyard.core.models import architecture_loads_weights, recording_weight_loads

    path = tmp_path / "w.pt"
    torch.save(_state(), path)
    assert not architecture_loads_weights(registry.get("simple_cnn"))
    with recording_weight_loads() as reports:
        build_model(registry, "simple_cnn", num_classes=3, weights_path=path)
    assert len(reports) == 1
    assert reports[0].source == str(path.resolve()) and reports[0].skipped == () and reports[0].reinitialised == ()
    assert set(reports[0].loaded) == set(_state())


def test_load_backbone_weights_loads_the_backbone_and_keeps_a_fresh_head_of_another_shape() -> None:
    from modelyard.core import LoadReport, load_backbone_weights

    ten = _state(num_classes=10)
    torch.manual_seed(7)
    model = simple_cnn.build_simple_cnn(3)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("1.")}

    report = load_backbone_weights(model, ten, head="1")

    assert isinstance(report, LoadReport) and report.source is None
    assert report.skipped == ("1.1.bias", "1.1.weight") and report.reinitialised == ("1.1.bias", "1.1.weight")
    assert report.as_record()["skipped_keys"] == ["1.1.bias", "1.1.weight"] and report.head == ("1",)
    for key, value in model.state_dict().items():
        if key.startswith("1."):
            assert torch.equal(value, fresh_head[key]), key
        else:
            assert torch.equal(value, ten[key]), key


def test_load_backbone_weights_loads_a_head_of_the_same_shape_too(tmp_path: Path) -> None:
    from modelyard.core import load_backbone_weights

    three = _state(num_classes=3)
    path = tmp_path / "three.safetensors"
    save_file(three, str(path))
    torch.manual_seed(9)
    model = simple_cnn.build_simple_cnn(3)
    report = load_backbone_weights(model, path, head=["1"])
    assert report.skipped == () and report.reinitialised == () and report.source == str(path)
    assert torch.equal(model[1][1].weight, three["1.1.weight"])


def test_load_backbone_weights_is_strict_on_the_backbone(tmp_path: Path) -> None:
    from modelyard.core import load_backbone_weights

    model = simple_cnn.build_simple_cnn(3)
    ten = _state(num_classes=10)
    missing = {k: v for k, v in ten.items() if not k.startswith("0.4.")}
    with pytest.raises(ValidationError) as caught:
        load_backbone_weights(model, {**missing, "extra.weight": torch.zeros(1)}, head="1")
    error = caught.value
    assert error.field == "model.weights_path" and "backbone" in error.message
    assert "0.4.0.weight" in error.details["missing_keys"] and error.details["unexpected_keys"] == ["extra.weight"]

    grey = _state(num_classes=10, in_channels=1)
    path = tmp_path / "grey.pt"
    torch.save(grey, path)
    with pytest.raises(ValidationError, match=r"grey.pt has backbone tensors of the wrong shape .*0\.0\.0\.weight"):
        load_backbone_weights(model, path, head="1")


def test_load_backbone_weights_strips_a_wrapper_prefix_judged_on_the_backbone() -> None:
    from modelyard.core import load_backbone_weights

    ten = _state(num_classes=10)
    model = simple_cnn.build_simple_cnn(3)
    report = load_backbone_weights(model, {f"net.{k}": v for k, v in ten.items()}, head="1")
    assert report.skipped == ("1.1.bias", "1.1.weight")
    assert torch.equal(model[0][0][0].weight, ten["0.0.0.weight"])


def test_parameter_count_builds_an_own_loader_without_a_file() -> None:
    calls: list[object] = []
    assert parameter_count(_own_loader(calls)) == sum(p.numel() for p in simple_cnn.build_simple_cnn(1000).parameters())
    assert calls and all(call is None for call in calls)
