"""The experiment config schema (core/training/config.py): defaults, merging, validation, YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.core.errors import UnknownArchitectureError, ValidationError
from modelyard.core.plugin_types import Architecture
from modelyard.core.registry import ArchitectureRegistry
from modelyard.core.training.config import (
    ExperimentConfig,
    config_hash,
    deep_merge,
    dump_yaml,
    load_config_file,
    monitor_of,
    parse_config,
    resolve_config,
)
from modelyard.plugins.classification import CLASSIFICATION
from modelyard.plugins.simple_cnn import build_simple_cnn

DATASET = {"split_names": ["80-10-10", "70-30"], "classes": ["a", "b"], "images": []}
CPU_ONLY = ["cpu"]


@pytest.fixture
def registry() -> ArchitectureRegistry:
    registry = ArchitectureRegistry()
    registry.add(Architecture(name="simple_cnn", build=build_simple_cnn, head_name="1"))
    registry.add(Architecture(name="resnet18", build=build_simple_cnn, has_pretrained=True))
    return registry


def resolve(partial: dict, registry: ArchitectureRegistry, **kwargs) -> ExperimentConfig:
    kwargs.setdefault("devices", CPU_ONLY)
    kwargs.setdefault("task", CLASSIFICATION)
    return resolve_config(partial, registry, DATASET, **kwargs)


def field_of(excinfo: pytest.ExceptionInfo[ValidationError]) -> str | None:
    return excinfo.value.details.get("field")


# -- defaults and merging -----------------------------------------------------------


def test_empty_config_resolves_to_the_documented_task_defaults(registry) -> None:
    config = resolve({}, registry)
    assert config.model.architecture == "resnet18" and config.model.pretrained is False
    assert config.data.image_size == (64, 64) and config.data.batch_size == 32
    assert config.data.num_workers == "auto" and config.data.cache == "auto" and config.data.channels == 3
    assert config.training.optimizer.name == "adamw" and config.training.optimizer.lr == 0.001
    assert config.training.scheduler.name == "cosine"
    assert config.training.loss.class_weights == "none"
    assert config.training.early_stopping is not None and config.training.early_stopping.monitor == "val/loss"
    assert config.training.precision == "auto" and config.training.seed == 42
    assert config.hardware.devices == ["cpu"] and config.hardware.num_processes == 1


def test_default_devices_follow_the_machine_first_gpu_when_there_is_one(registry) -> None:
    config = resolve({}, registry, devices=["cpu", "gpu:0", "gpu:1"])
    assert config.hardware.devices == ["gpu:0"]


def test_partial_config_is_deep_merged_onto_defaults(registry) -> None:
    config = resolve({"training": {"optimizer": {"lr": 0.1}}}, registry)
    assert config.training.optimizer.lr == 0.1
    assert config.training.optimizer.name == "adamw"  # sibling kept
    assert config.training.max_epochs == 20


def test_deep_merge_replaces_lists_and_nulls_and_leaves_inputs_untouched() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": {"e": 1}}
    merged = deep_merge(base, {"a": {"c": [3]}, "d": None})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": None}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": {"e": 1}}


def test_patch_on_a_stored_config_keeps_its_other_values(registry) -> None:
    stored = dump_dict(resolve({"model": {"architecture": "simple_cnn"}, "training": {"max_epochs": 3}}, registry))
    patched = resolve({"training": {"seed": 7}}, registry, base=stored)
    assert patched.model.architecture == "simple_cnn" and patched.training.max_epochs == 3 and patched.training.seed == 7


def test_null_early_stopping_disables_it_and_best_follows_val_loss(registry) -> None:
    config = resolve({"training": {"early_stopping": None}}, registry)
    assert config.training.early_stopping is None
    assert monitor_of(config, CLASSIFICATION) == "val/loss"
    assert monitor_of(resolve({"training": {"early_stopping": {"monitor": "val/acc"}}}, registry), CLASSIFICATION) == "val/acc"


def test_precision_32_written_as_a_yaml_number_means_full_precision(registry) -> None:
    assert resolve({"training": {"precision": 32}}, registry).training.precision == "32"


def test_config_hash_is_stable_and_changes_with_the_config(registry) -> None:
    a, b = resolve({}, registry), resolve({}, registry)
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(resolve({"training": {"seed": 1}}, registry))


# -- validation errors name the field ---------------------------------------------------


@pytest.mark.parametrize(
    ("partial", "field"),
    [
        ({"training": {"optimizer": {"lr": "fast"}}}, "config.training.optimizer.lr"),
        ({"training": {"optimizer": {"lr": -1}}}, "config.training.optimizer.lr"),
        ({"training": {"optimizer": {"name": "lion"}}}, "config.training.optimizer.name"),
        ({"training": {"scheduler": {"name": "plateau"}}}, "config.training.scheduler.name"),
        ({"training": {"loss": {"class_weights": "inverse"}}}, "config.training.loss.class_weights"),
        ({"training": {"loss": {"label_smoothing": 1.0}}}, "config.training.loss.label_smoothing"),
        ({"training": {"precision": "8-bit"}}, "config.training.precision"),
        ({"training": {"batch_multiplier": 0}}, "config.training.batch_multiplier"),
        ({"training": {"early_stopping": {"monitor": "train/loss"}}}, "config.training.early_stopping.monitor"),
        ({"data": {"image_size": [64]}}, "config.data.image_size"),
        ({"data": {"image_size": [4, 4]}}, "config.data.image_size[0]"),
        ({"data": {"channels": 4}}, "config.data.channels"),
        ({"data": {"num_workers": "many"}}, "config.data.num_workers"),
        ({"data": {"cache": "disk"}}, "config.data.cache"),
        ({"model": {"dropout": 1.5}}, "config.model.dropout"),
        ({"model": {"target": "os.system"}}, "config.model.target"),
        ({"optimiser": {}}, "config.optimiser"),
        ({"hardware": 5}, "config.hardware"),
        ({"training": None}, "config.training"),
        ({"data": {"augmentations": {"train": [{"name": "RandomHorizontalFlip", "p": 0.5}]}}},
         "config.data.augmentations.train[0].p"),
    ],
)
def test_invalid_values_are_refused_naming_the_field_path(registry, partial, field) -> None:
    with pytest.raises(ValidationError) as excinfo:
        resolve(partial, registry)
    assert field_of(excinfo) == field
    assert field in excinfo.value.message


def test_unknown_architecture_lists_the_registered_ones(registry) -> None:
    with pytest.raises(UnknownArchitectureError) as excinfo:
        resolve({"model": {"architecture": "resnet9000"}}, registry)
    assert field_of(excinfo) == "config.model.architecture"
    assert excinfo.value.details["available"] == ["resnet18", "simple_cnn"]


def test_pretrained_is_refused_for_an_architecture_without_weights(registry) -> None:
    with pytest.raises(ValidationError) as excinfo:
        resolve({"model": {"architecture": "simple_cnn", "pretrained": True}}, registry)
    assert field_of(excinfo) == "config.model.pretrained"


def test_freeze_backbone_needs_an_architecture_that_names_its_head(registry) -> None:
    assert resolve({"model": {"architecture": "simple_cnn", "freeze_backbone": True}}, registry).model.freeze_backbone
    with pytest.raises(ValidationError) as excinfo:
        resolve({"model": {"architecture": "resnet18", "freeze_backbone": True}}, registry)
    assert field_of(excinfo) == "config.model.freeze_backbone"


# -- the architecture's input size constraints and validate(config) (0.3) ------------------------------------


def test_declared_input_size_constraints_are_refused_naming_image_size(registry) -> None:
    registry.add(Architecture(name="patchy", build=build_simple_cnn, min_input_size=(32, 24), input_size_multiple=8))
    assert resolve({"model": {"architecture": "patchy"}, "data": {"image_size": [32, 24]}}, registry)
    with pytest.raises(ValidationError, match="patchy needs an input of at least 32x24 pixels, got 16x64") as excinfo:
        resolve({"model": {"architecture": "patchy"}, "data": {"image_size": [16, 64]}}, registry)
    assert field_of(excinfo) == "config.data.image_size" and excinfo.value.details["min_input_size"] == [32, 24]
    with pytest.raises(ValidationError, match=r"multiples of 8, got 36x40 \(e.g. 40x40\)") as excinfo:
        resolve({"model": {"architecture": "patchy"}, "data": {"image_size": [36, 40]}}, registry)
    assert field_of(excinfo) == "config.data.image_size"


def test_the_architectures_validate_sees_the_resolved_config_and_its_error_names_the_config_field(registry) -> None:
    seen: list[dict] = []

    def validate(config: dict) -> None:
        seen.append(config)
        if config["data"]["image_size"][0] != 48:
            raise ValidationError("picky takes 48x48 only", field="data.image_size")

    registry.add(Architecture(name="picky", build=build_simple_cnn, validate=validate))
    resolved = resolve({"model": {"architecture": "picky"}, "data": {"image_size": [48, 48]}}, registry)
    assert seen[-1]["data"]["image_size"] == [48, 48] and seen[-1]["training"]["max_epochs"] == resolved.training.max_epochs
    with pytest.raises(ValidationError, match="^picky takes 48x48 only$") as excinfo:
        resolve({"model": {"architecture": "picky"}, "data": {"image_size": [32, 32]}}, registry)
    assert field_of(excinfo) == "config.data.image_size"


def test_validate_gets_the_task_when_it_names_it_and_a_field_less_error_names_the_architecture(registry) -> None:
    tasks: list[str] = []

    def validate(config: dict, task: str) -> None:
        tasks.append(task)
        if config["model"]["dropout"] > 0:
            raise ValidationError("no dropout here")

    registry.add(Architecture(name="tasked", build=build_simple_cnn, validate=validate))
    resolve({"model": {"architecture": "tasked"}}, registry)
    assert tasks == ["classification"]
    with pytest.raises(ValidationError, match="no dropout here") as excinfo:
        resolve({"model": {"architecture": "tasked", "dropout": 0.5}}, registry)
    assert field_of(excinfo) == "config.model.architecture"


def test_a_validate_that_crashes_is_a_validation_error_naming_the_architecture(registry) -> None:
    def validate(config: dict) -> None:
        raise KeyError("oops")

    registry.add(Architecture(name="buggy", build=build_simple_cnn, validate=validate))
    with pytest.raises(ValidationError, match="architecture 'buggy' could not check this request: KeyError") as excinfo:
        resolve({"model": {"architecture": "buggy"}}, registry)
    assert field_of(excinfo) == "config.model.architecture"


def test_validate_cannot_change_the_config_it_is_shown(registry) -> None:
    def validate(config: dict) -> None:
        config["data"]["image_size"] = [8, 8]

    registry.add(Architecture(name="meddler", build=build_simple_cnn, validate=validate))
    assert resolve({"model": {"architecture": "meddler"}, "data": {"image_size": [32, 32]}}, registry).data.image_size == (32, 32)


def test_split_index_must_exist_in_the_dataset(registry) -> None:
    assert resolve({"split_index": 1}, registry).split_index == 1
    with pytest.raises(ValidationError) as excinfo:
        resolve({"split_index": 2}, registry)
    assert field_of(excinfo) == "config.split_index"
    assert "80-10-10" in excinfo.value.message


def test_split_index_is_not_checked_before_a_dataset_exists(registry) -> None:
    assert resolve_config({"split_index": 3}, registry, None, devices=CPU_ONLY).split_index == 3


def test_multistep_needs_increasing_milestones(registry) -> None:
    with pytest.raises(ValidationError) as excinfo:
        resolve({"training": {"scheduler": {"name": "multistep"}}}, registry)
    assert field_of(excinfo) == "config.training.scheduler.milestones"
    with pytest.raises(ValidationError):
        resolve({"training": {"scheduler": {"name": "multistep", "milestones": [5, 3]}}}, registry)
    ok = resolve({"training": {"scheduler": {"name": "multistep", "milestones": [3, 5]}}}, registry)
    assert ok.training.scheduler.milestones == [3, 5]


def test_warmup_must_be_shorter_than_training(registry) -> None:
    with pytest.raises(ValidationError) as excinfo:
        resolve({"training": {"max_epochs": 2, "scheduler": {"warmup_epochs": 2}}}, registry)
    assert field_of(excinfo) == "config.training.scheduler.warmup_epochs"


@pytest.mark.parametrize(
    ("hardware", "field"),
    [
        ({"devices": []}, "config.hardware.devices"),
        ({"devices": ["gpu:7"]}, "config.hardware.devices[0]"),
        ({"devices": ["cuda:0"]}, "config.hardware.devices[0]"),
        ({"devices": ["cpu", "cpu"]}, "config.hardware.devices"),
        ({"devices": ["cpu", "gpu:0"]}, "config.hardware.devices"),
        ({"devices": ["gpu:0"], "num_processes": 2}, "config.hardware.num_processes"),
        ({"strategy": "fsdp"}, "config.hardware.strategy"),
    ],
)
def test_devices_must_exist_on_this_machine_and_not_mix(registry, hardware, field) -> None:
    with pytest.raises(ValidationError) as excinfo:
        resolve({"hardware": hardware}, registry, devices=["cpu", "gpu:0"])
    assert field_of(excinfo) == field


def test_cpu_ddp_with_several_processes_is_accepted(registry) -> None:
    config = resolve({"hardware": {"devices": ["cpu"], "num_processes": 2}}, registry)
    assert config.hardware.num_processes == 2


def test_half_precision_is_refused_on_the_cpu(registry) -> None:
    with pytest.raises(ValidationError) as excinfo:
        resolve({"training": {"precision": "16-mixed"}}, registry)
    assert field_of(excinfo) == "config.training.precision"
    assert resolve({"training": {"precision": "bf16-mixed"}}, registry).training.precision == "bf16-mixed"


# -- weights_path (a path from the client) ------------------------------------------------------


def test_weights_path_must_be_an_existing_file_inside_the_allowed_roots(registry, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    weights = root / "w.pt"
    weights.write_bytes(b"x")
    outside = tmp_path / "outside.pt"
    outside.write_bytes(b"x")
    ok = resolve({"model": {"weights_path": str(weights)}}, registry, weight_roots=[root])
    assert ok.model.weights_path == str(weights)
    hostile = [
        str(outside),
        str(root / ".." / "outside.pt"),
        "relative/w.pt",
        "../../etc/passwd",
        "/etc/passwd",
        str(root / "missing.pt"),
        str(root) + "/w.pt\x00.png",
        "",
    ]
    for raw in hostile:
        with pytest.raises(ValidationError) as excinfo:
            resolve({"model": {"weights_path": raw}}, registry, weight_roots=[root])
        assert field_of(excinfo) == "config.model.weights_path", raw


def test_a_symlink_out_of_the_allowed_root_is_refused(registry, tmp_path: Path) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    secret = tmp_path / "secret.pt"
    secret.write_bytes(b"x")
    (root / "link.pt").symlink_to(secret)
    with pytest.raises(ValidationError):
        resolve({"model": {"weights_path": str(root / "link.pt")}}, registry, weight_roots=[root])


# -- YAML ----------------------------------------------------------------------------------------


def test_yaml_file_gives_the_same_config_as_the_api_body(registry, tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "split_index: 0\n"
        "model: {architecture: simple_cnn}\n"
        "data: {image_size: [32, 32], num_workers: auto,\n"
        "       augmentations: {train: [{name: RandomHorizontalFlip, params: {p: 0.5}}], val: []}}\n"
        "training: {precision: 32, loss: {class_weights: none}, early_stopping: null}\n",
        encoding="utf-8",
    )
    from_yaml = resolve(load_config_file(path), registry)
    from_body = resolve(
        {
            "split_index": 0,
            "model": {"architecture": "simple_cnn"},
            "data": {"image_size": [32, 32], "num_workers": "auto",
                     "augmentations": {"train": [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}], "val": []}},
            "training": {"precision": "32", "loss": {"class_weights": "none"}, "early_stopping": None},
        },
        registry,
    )
    assert from_yaml == from_body


def test_frozen_yaml_round_trips_to_the_same_config(registry) -> None:
    import yaml

    config = resolve({"model": {"architecture": "simple_cnn"}, "training": {"scheduler": {"name": "multistep", "milestones": [2]}}}, registry)
    assert parse_config(yaml.safe_load(dump_yaml(config))) == config


@pytest.mark.parametrize(
    "text",
    [
        "- a\n- b\n",  # not a mapping
        "model: [unclosed\n",  # not YAML
        "model: !!python/object/apply:os.system ['touch /tmp/x']\n",  # no arbitrary objects
    ],
)
def test_bad_yaml_files_are_refused_clearly(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValidationError) as excinfo:
        load_config_file(path)
    assert excinfo.value.details.get("field") == "config"


def dump_dict(config: ExperimentConfig) -> dict:
    from modelyard.core.training.config import config_to_dict

    return config_to_dict(config)
