"""The pipeline file's schema: what it accepts, and errors that name the offending field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.core.errors import ValidationError
from modelyard.core.pipeline.runner import check_pipeline
from modelyard.core.pipeline.schema import experiment_partial, is_pipeline_document, load_pipeline, parse_pipeline
from modelyard.core.pipeline.source import resolve_source
from modelyard.core.services import Services

MINIMAL: dict[str, Any] = {
    "project": {"name": "P"},
    "dataset": {"path": "data"},
    "split": {"name": "s", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "experiment": {"name": "e", "config": {"model": {"architecture": "simple_cnn"}}},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(MINIMAL)
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return document


def test_a_minimal_pipeline_takes_the_documented_defaults() -> None:
    pipeline = parse_pipeline(MINIMAL)
    assert pipeline.project.task == "classification"
    assert (pipeline.dataset.format, pipeline.dataset.replace) == ("auto", False)
    assert (pipeline.split.seed, pipeline.split.stratified) == (42, True)
    assert pipeline.evaluate is not None and pipeline.evaluate.subsets == ["test"]
    assert pipeline.evaluate.checkpoint == "best" and pipeline.exports == []


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({k: v for k, v in MINIMAL.items() if k != "dataset"}, "dataset"),
        (with_change("project.colour", "red"), "project.colour"),
        (with_change("split.ratios.train", 1.5), "split.ratios.train"),
        (with_change("split.ratios", {"val": 0.5}), "split.ratios.train"),
        (with_change("split.seed", "lucky"), "split.seed"),
        (with_change("evaluate", {"subsets": ["holdout"]}), "evaluate.subsets[0]"),
        (with_change("exports", [{"format": "onnx", "opset": 17}]), "exports[0].opset"),
        (with_change("dataset", "data/"), "dataset"),
    ],
    ids=["missing-section", "unknown-field", "ratio-out-of-range", "missing-ratio", "wrong-type", "unknown-subset",
         "unknown-export-field", "section-not-a-mapping"],
)
def test_a_malformed_pipeline_is_refused_naming_the_field(document: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        parse_pipeline(document)
    assert error.value.field == field
    assert error.value.message.startswith(field)


@pytest.mark.parametrize("document", [None, [], "project: x", 3])
def test_a_document_that_is_not_a_mapping_is_refused(document: Any) -> None:
    with pytest.raises(ValidationError) as error:
        parse_pipeline(document)
    assert error.value.field == "pipeline"


def test_a_yaml_file_with_python_tags_is_refused_without_running_anything(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"project: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="not valid YAML"):
        load_pipeline(path)
    assert not marker.exists()


def test_a_pipeline_nested_absurdly_deep_is_refused_before_conversion() -> None:
    deep: Any = "x"
    for _ in range(200):
        deep = {"a": deep}
    with pytest.raises(ValidationError, match="nested too deeply"):
        parse_pipeline(with_change("experiment.config", deep))


def test_pipeline_documents_are_told_apart_from_experiment_configs() -> None:
    assert is_pipeline_document(MINIMAL)
    assert not is_pipeline_document({"model": {"architecture": "simple_cnn"}, "training": {"max_epochs": 3}})
    assert not is_pipeline_document(["project"])


def test_the_split_index_comes_from_the_pipeline_split_and_may_not_contradict_it() -> None:
    pipeline = parse_pipeline(MINIMAL)
    assert experiment_partial(pipeline, 2)["split_index"] == 2
    assert experiment_partial(parse_pipeline(with_change("experiment.config.split_index", 2)), 2)["split_index"] == 2
    with pytest.raises(ValidationError) as error:
        experiment_partial(parse_pipeline(with_change("experiment.config.split_index", 1)), 0)
    assert error.value.field == "experiment.config.split_index"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("experiment.config.model.architecture", "no_such_net", "experiment.config.model.architecture"),
        ("experiment.config.training", {"optimizer": {"lr": "fast"}}, "experiment.config.training.optimizer.lr"),
        ("experiment.config.data", {"augmentations": {"train": [{"name": "os.system"}]}},
         "experiment.config.data.augmentations.train[0].name"),
        ("exports", [{"format": "no_such_format"}], "exports[0].format"),
        ("exports", [{"format": "onnx", "options": {"opset_version": 3}}], "exports[0].options.opset_version"),
        ("exports", [{"format": "onnx", "options": {"input_shape": [1, 3, 99, 99]}}], "exports[0].options.input_shape"),
        ("split.ratios", {"train": 0.8, "val": 0.3}, "split.ratios"),
        ("evaluate", {"subsets": ["val"]}, "evaluate.subsets"),
    ],
    ids=["architecture", "optimizer-lr", "augmentation", "export-format", "export-option", "export-input-shape",
         "ratios-sum", "evaluated-subset-empty"],
)
def test_check_refuses_what_would_fail_later_before_any_step_runs(services: Services, path: str, value: Any,
                                                                   field: str) -> None:
    document = with_change(path, value)
    if path == "evaluate":
        document["split"]["ratios"] = {"train": 0.8, "test": 0.2}
    with pytest.raises(ValidationError) as error:
        check_pipeline(services, parse_pipeline(document))
    assert error.value.field == field
    assert services.projects.list() == []  # nothing was created


def test_gpus_named_by_a_pipeline_are_checked_for_shape_only_until_a_run_starts(services: Services) -> None:
    check_pipeline(services, parse_pipeline(with_change("experiment.config.hardware", {"devices": ["gpu:0", "gpu:1"]})))
    with pytest.raises(ValidationError) as error:
        check_pipeline(services, parse_pipeline(with_change("experiment.config.hardware", {"devices": ["tpu"]})))
    assert error.value.field == "experiment.config.hardware.devices[0]"


def test_the_dataset_path_is_resolved_against_the_pipeline_file_folder(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "data").mkdir()
    assert resolve_source("../data", tmp_path / "configs") == (tmp_path / "data").resolve()
    assert resolve_source(str(tmp_path / "data"), Path("/somewhere/else")) == (tmp_path / "data").resolve()


@pytest.mark.parametrize("raw", ["", "data\x00/../../etc", "missing-folder", "notes.txt"])
def test_a_dataset_path_that_is_no_folder_or_zip_is_refused(tmp_path: Path, raw: str) -> None:
    (tmp_path / "notes.txt").write_text("not a zip", encoding="utf-8")
    with pytest.raises(ValidationError) as error:
        resolve_source(raw, tmp_path)
    assert error.value.field == "dataset.path"


def test_the_yaml_loader_reads_a_pipeline_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(MINIMAL), encoding="utf-8")
    assert load_pipeline(path).experiment.config == {"model": {"architecture": "simple_cnn"}}
