"""Every file in configs/ is valid for what it is: a pipeline file (``modelyard run``) or an experiment config.

One convention: a file with the pipeline's sections (project, dataset, split,
experiment) is a pipeline file; any other file is an experiment config for
``modelyard train`` (DESIGN section 5). Both are validated by the same code
the commands use; device ids are checked for their shape only, since the
GPUs an example names need not exist on the machine running the tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.core.pipeline.runner import check_pipeline
from modelyard.core.pipeline.schema import check_experiment_config, is_pipeline_document, parse_pipeline, read_yaml
from modelyard.core.plugin_manager import default_plugin_host
from modelyard.core.services import Services

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(p for p in CONFIGS_DIR.iterdir() if p.is_file())
PIPELINES = [p for p in CONFIGS if is_pipeline_document(read_yaml(p))]
EXPERIMENT_CONFIGS = [p for p in CONFIGS if p not in PIPELINES]


def test_configs_holds_the_demo_pipelines_and_the_ready_experiment_configs() -> None:
    assert [p.name for p in PIPELINES] == ["demo.yaml", "detection-quick.yaml"]
    assert {"cpu-quick.yaml", "transfer-resnet18.yaml", "multi-gpu-ddp.yaml"} <= {p.name for p in EXPERIMENT_CONFIGS}
    assert all(p.suffix == ".yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", EXPERIMENT_CONFIGS, ids=[p.name for p in EXPERIMENT_CONFIGS])
def test_experiment_config_validates_against_the_schema_and_the_real_plugins(path: Path) -> None:
    document = read_yaml(path)
    config = check_experiment_config(document, default_plugin_host().architectures, default_plugin_host().tasks, root="config")
    assert config.model.architecture == document["model"]["architecture"]


@pytest.mark.parametrize("path", PIPELINES, ids=[p.name for p in PIPELINES])
def test_pipeline_file_validates_including_its_experiment_config_and_exports(path: Path, services: Services) -> None:
    pipeline = parse_pipeline(read_yaml(path))
    check_pipeline(services, pipeline)
    assert pipeline.exports and pipeline.evaluate is not None


def test_the_ready_configs_are_what_their_names_promise() -> None:
    by_name = {p.name: read_yaml(p) for p in EXPERIMENT_CONFIGS}
    assert by_name["cpu-quick.yaml"]["model"]["architecture"] == "simple_cnn"
    assert by_name["cpu-quick.yaml"]["hardware"]["devices"] == ["cpu"]
    transfer = by_name["transfer-resnet18.yaml"]["model"]
    assert transfer["architecture"] == "resnet18" and transfer["pretrained"] is True
    ddp = by_name["multi-gpu-ddp.yaml"]["hardware"]
    assert len(ddp["devices"]) >= 2 and all(d.startswith("gpu:") for d in ddp["devices"])


def test_demo_pipeline_trains_simple_cnn_on_the_cpu_and_exports_onnx() -> None:
    demo = parse_pipeline(read_yaml(CONFIGS_DIR / "demo.yaml"))
    assert demo.experiment.config["model"]["architecture"] == "simple_cnn"
    assert demo.experiment.config["hardware"]["devices"] == ["cpu"]
    assert [e.format for e in demo.exports] == ["onnx"]
    assert demo.evaluate is not None and demo.evaluate.subsets == ["test"]


def test_demo_dataset_path_is_where_make_demo_generates_the_shapes() -> None:
    demo = parse_pipeline(read_yaml(CONFIGS_DIR / "demo.yaml"))
    expected = CONFIGS_DIR.parent / "workspace" / "sample-data" / "shapes"
    assert (CONFIGS_DIR / demo.dataset.path).resolve() == expected.resolve()
    makefile = (CONFIGS_DIR.parent / "Makefile").read_text(encoding="utf-8")
    assert "DEMO_DATA ?= $(WORKSPACE)/sample-data/shapes" in makefile and "WORKSPACE ?= ./workspace" in makefile
    assert "sample-data shapes $(DEMO_DATA)" in makefile
    assert "modelyard run configs/demo.yaml --workspace $(WORKSPACE) --dataset $(DEMO_DATA)" in makefile
