"""Experiments API (reference section 4): create, list, get, patch, delete, and hostile input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelyard.core import Architecture, ValidationError, hookimpl
from modelyard.core.training.run_folder import create_run_folder, update_run
from tests.conftest import assert_error
from tests.helpers.datasets import write_shapes_dataset

TINY = {"model": {"architecture": "simple_cnn"}, "data": {"image_size": [16, 16]}, "training": {"max_epochs": 2}}


@pytest.fixture
def project_with_data(project_id: str, services) -> str:
    write_shapes_dataset(services.workspace.project_dir(project_id), per_class=3, size=16)
    return project_id


def url(project_id: str, experiment_id: str = "") -> str:
    return f"/api/training/{project_id}/experiments" + (f"/{experiment_id}" if experiment_id else "")


def create(client, project_id: str, name: str = "baseline", config: dict | None = None) -> dict:
    response = client.post(url(project_id), json={"name": name, "description": "d", "config": config or TINY})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def add_run(services, project_id: str, experiment_id: str, **fields) -> Path:
    run_dir = create_run_folder(services.workspace, project_id, experiment_id,
                                services.experiments.run_config(project_id, experiment_id))
    update_run(services.workspace, run_dir, lambda r: r.with_fields(**fields))
    return run_dir


# -- create / get / list -----------------------------------------------------------------------


def test_create_returns_the_fully_resolved_config(client, project_with_data: str) -> None:
    data = create(client, project_with_data)
    assert data["id"].startswith("exp-") and data["name"] == "baseline" and data["description"] == "d"
    config = data["config"]
    assert config["model"]["architecture"] == "simple_cnn" and config["data"]["image_size"] == [16, 16]
    assert config["training"]["optimizer"] == {"name": "adamw", "lr": 0.001, "weight_decay": 0.0001, "momentum": 0.9}
    assert config["hardware"]["devices"] == ["cpu"]
    assert data["runs"] == [] and data["run_count"] == 0 and data["latest_run"] is None
    assert data["created_at"].endswith("Z")


def test_get_returns_what_was_created(client, project_with_data: str) -> None:
    created = create(client, project_with_data)
    got = client.get(url(project_with_data, created["id"]))
    assert got.status_code == 200
    assert got.json()["data"] == created


def test_an_empty_config_takes_the_task_defaults(client, project_with_data: str) -> None:
    response = client.post(url(project_with_data), json={"name": "defaults"})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["config"]["training"]["max_epochs"] == 20


def test_list_shows_each_experiment_with_its_latest_run_and_best_metric(client, services, project_with_data: str) -> None:
    first = create(client, project_with_data, "first")
    second = create(client, project_with_data, "second")
    add_run(services, project_with_data, first["id"], status="completed", best_metrics={"val/loss": 0.4}, best_epoch=2)
    latest = add_run(services, project_with_data, first["id"], status="failed", best_metrics={"val/loss": 0.7},
                     created_at="2099-01-01T00:00:00Z")

    listed = client.get(url(project_with_data)).json()["data"]

    assert [e["id"] for e in listed] == [first["id"], second["id"]]
    assert "config" not in listed[0]
    assert listed[0]["run_count"] == 2
    assert listed[0]["latest_run"]["id"] == latest.name and listed[0]["latest_run"]["status"] == "failed"
    assert listed[0]["best_metric"] == {"name": "val/loss", "value": 0.4, "run_id": listed[0]["best_metric"]["run_id"],
                                        "epoch": 2}
    assert listed[1]["latest_run"] is None and listed[1]["best_metric"] is None


def test_validation_errors_name_the_config_field(client, project_with_data: str) -> None:
    response = client.post(url(project_with_data), json={"name": "x", "config": {"training": {"optimizer": {"lr": "fast"}}}})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "config.training.optimizer.lr"
    response = client.post(url(project_with_data), json={"name": "x", "config": {"split_index": 3}})
    assert assert_error(response, 422, "VALIDATION_ERROR")["details"]["field"] == "config.split_index"
    response = client.post(url(project_with_data), json={"name": "x", "config": {"model": {"architecture": "nope"}}})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "config.model.architecture" and "simple_cnn" in error["details"]["available"]
    response = client.post(url(project_with_data), json={"name": "x", "config": {"data": {
        "augmentations": {"train": [{"name": "RandomRotation", "params": {"degrees": "lots"}}]}}}})
    assert assert_error(response, 422, "VALIDATION_ERROR")["details"]["field"] == "config.data.augmentations.train[0].params"


def test_unknown_body_fields_are_refused(client, project_with_data: str) -> None:
    response = client.post(url(project_with_data), json={"name": "x", "config": TINY, "owner": "me"})
    assert_error(response, 422, "VALIDATION_ERROR")


def test_names_are_unique_within_a_project(client, project_with_data: str) -> None:
    create(client, project_with_data, "same")
    error = assert_error(client.post(url(project_with_data), json={"name": "same", "config": TINY}), 409, "CONFLICT")
    assert error["details"]["name"] == "same"


# -- patch -----------------------------------------------------------------------------------------------


def test_patch_deep_merges_and_revalidates(client, project_with_data: str) -> None:
    created = create(client, project_with_data)
    response = client.patch(url(project_with_data, created["id"]),
                            json={"description": "tuned", "config": {"training": {"optimizer": {"lr": 0.01}}}})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["description"] == "tuned" and data["config"]["training"]["optimizer"]["lr"] == 0.01
    assert data["config"]["training"]["optimizer"]["name"] == "adamw"  # merged, not replaced
    assert data["config"]["model"]["architecture"] == "simple_cnn" and data["updated_at"] >= created["updated_at"]
    bad = client.patch(url(project_with_data, created["id"]), json={"config": {"training": {"max_epochs": 0}}})
    assert assert_error(bad, 422, "VALIDATION_ERROR")["details"]["field"] == "config.training.max_epochs"
    assert client.get(url(project_with_data, created["id"])).json()["data"]["config"]["training"]["max_epochs"] == 2


def test_patch_is_allowed_while_a_run_trains_and_the_run_keeps_its_frozen_config(
    client, services, project_with_data: str
) -> None:
    created = create(client, project_with_data)
    run_dir = add_run(services, project_with_data, created["id"], status="running")
    frozen = (run_dir / "config.yaml").read_text()
    response = client.patch(url(project_with_data, created["id"]), json={"config": {"training": {"max_epochs": 9}}})
    assert response.status_code == 200
    assert (run_dir / "config.yaml").read_text() == frozen
    assert yaml.safe_load(frozen)["training"]["max_epochs"] == 2


def test_patch_can_disable_early_stopping_with_null(client, project_with_data: str) -> None:
    created = create(client, project_with_data)
    data = client.patch(url(project_with_data, created["id"]), json={"config": {"training": {"early_stopping": None}}})
    assert data.json()["data"]["config"]["training"]["early_stopping"] is None


# -- delete ----------------------------------------------------------------------------------------------


def test_delete_removes_the_experiment_and_its_runs(client, services, project_with_data: str) -> None:
    created = create(client, project_with_data)
    run_dir = add_run(services, project_with_data, created["id"], status="completed")
    response = client.delete(url(project_with_data, created["id"]))
    assert response.status_code == 200 and response.json()["data"] == {"id": created["id"], "deleted": True}
    assert not run_dir.exists() and not run_dir.parent.parent.exists()
    assert_error(client.get(url(project_with_data, created["id"])), 404, "NOT_FOUND")


@pytest.mark.parametrize("status", ["pending", "running"])
def test_delete_is_refused_while_a_run_is_active(client, services, project_with_data: str, status: str) -> None:
    created = create(client, project_with_data)
    run_dir = add_run(services, project_with_data, created["id"], status=status)
    error = assert_error(client.delete(url(project_with_data, created["id"])), 409, "CONFLICT")
    assert error["details"]["active_runs"] == [run_dir.name]
    assert run_dir.is_dir()


# -- not found and hostile input ----------------------------------------------------------------------------


def test_unknown_project_and_experiment_are_not_found(client, project_with_data: str) -> None:
    assert_error(client.get(url("proj-00000000")), 404, "NOT_FOUND")
    assert_error(client.post(url("proj-00000000"), json={"name": "x"}), 404, "NOT_FOUND")
    assert_error(client.get(url(project_with_data, "exp-00000000")), 404, "NOT_FOUND")
    assert_error(client.patch(url(project_with_data, "exp-00000000"), json={"name": "y"}), 404, "NOT_FOUND")
    assert_error(client.delete(url(project_with_data, "exp-00000000")), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "experiment_id",
    ["..", "exp-..%2F..", "exp-ABCDEFGH", "exp-1234567", "exp-123456789", "%2e%2e%2f%2e%2e", "exp-1234567%00", "run-12345678"],
)
def test_hostile_experiment_ids_never_touch_the_filesystem(client, project_with_data: str, workspace_dir: Path,
                                                           experiment_id: str) -> None:
    before = sorted(p.relative_to(workspace_dir) for p in workspace_dir.rglob("*"))
    for response in (client.get(url(project_with_data, experiment_id)), client.delete(url(project_with_data, experiment_id)),
                     client.patch(url(project_with_data, experiment_id), json={"name": "x"})):
        assert response.status_code in (404, 405), response.text
        assert response.json()["status"] == "error" and "Traceback" not in response.text
    assert sorted(p.relative_to(workspace_dir) for p in workspace_dir.rglob("*")) == before


@pytest.mark.parametrize(
    "weights_path",
    ["../../etc/passwd", "/etc/passwd", "relative.pt", "/nonexistent/w.pt", "\u0000", "x" * 5000],
)
def test_hostile_weights_paths_are_refused(client, project_with_data: str, weights_path: str) -> None:
    config = {**TINY, "model": {"architecture": "simple_cnn", "weights_path": weights_path}}
    error = assert_error(client.post(url(project_with_data), json={"name": "w", "config": config}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "config.model.weights_path"


def test_a_weights_path_inside_the_workspace_is_accepted(client, project_with_data: str, workspace_dir: Path) -> None:
    weights = workspace_dir / "uploads" / "w.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"placeholder")
    config = {**TINY, "model": {"architecture": "simple_cnn", "weights_path": str(weights)}}
    assert create(client, project_with_data, "w", config)["config"]["model"]["weights_path"] == str(weights)


# -- the architecture's own checks at save time (0.3) ------------------------------------------------------


class _PickyArchitecturePlugin:
    """A third-party architecture whose ``validate`` refuses input sizes that are not 48x48."""

    @hookimpl
    def register_architectures(self, registry) -> None:  # type: ignore[no-untyped-def]
        from modelyard.plugins.simple_cnn import build_simple_cnn

        def validate(config: dict) -> None:
            if list(config["data"]["image_size"]) != [48, 48]:
                raise ValidationError("picky_net is trained at 48x48 only", field="data.image_size")

        registry.add(Architecture(name="picky_net", build=build_simple_cnn, validate=validate))


@pytest.fixture
def picky_plugin(services) -> Iterator[str]:
    services.plugins.add_plugin(_PickyArchitecturePlugin(), name="picky")
    yield "picky_net"
    services.plugins.remove_plugin("picky")


def test_an_architectures_validate_refuses_a_config_at_save_time_and_nothing_is_saved(
    client, project_with_data: str, picky_plugin: str
) -> None:
    config = {**TINY, "model": {"architecture": picky_plugin}, "data": {"image_size": [32, 32]}}
    response = client.post(url(project_with_data), json={"name": "picky", "config": config})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["message"] == "picky_net is trained at 48x48 only"
    assert error["details"]["field"] == "config.data.image_size"
    assert client.get(url(project_with_data)).json()["data"] == []

    created = create(client, project_with_data, "picky", {**config, "data": {"image_size": [48, 48]}})
    bad = client.patch(url(project_with_data, created["id"]), json={"config": {"data": {"image_size": [64, 64]}}})
    assert assert_error(bad, 422, "VALIDATION_ERROR")["details"]["field"] == "config.data.image_size"
    assert client.get(url(project_with_data, created["id"])).json()["data"]["config"]["data"]["image_size"] == [48, 48]


def test_pretrained_for_an_architecture_without_weights_is_refused_at_save_time(client, project_with_data: str) -> None:
    config = {**TINY, "model": {"architecture": "simple_cnn", "pretrained": True}}
    error = assert_error(client.post(url(project_with_data), json={"name": "p", "config": config}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "config.model.pretrained" and "simple_cnn has no pretrained weights" in error["message"]
    assert client.get(url(project_with_data)).json()["data"] == []


def test_an_input_size_a_torchvision_family_cannot_take_is_refused_at_save_time(client, project_with_data: str) -> None:
    config = {**TINY, "model": {"architecture": "vit_b_16"}, "data": {"image_size": [40, 40]}}
    error = assert_error(client.post(url(project_with_data), json={"name": "v", "config": config}), 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == "config.data.image_size" and "multiples of 16" in error["message"]
    assert create(client, project_with_data, "v", {**config, "data": {"image_size": [48, 48]}})["config"]["data"]["image_size"] == [48, 48]


def test_a_deeply_nested_config_is_refused_not_crashed_on(client, project_with_data: str) -> None:
    nested: dict = {}
    for _ in range(900):
        nested = {"x": nested}
    response = client.post(url(project_with_data), json={"name": "deep", "config": {"model": nested}})
    # the body's schema has no field ``x`` in ``model``: refused at the first level, before any recursion
    assert assert_error(response, 422, "VALIDATION_ERROR")["details"]["field"] == "config.model.x"


@pytest.mark.parametrize("name", ["", "   ", "a/b", "x" * 201, "tab\there"])
def test_bad_names_are_refused(client, project_with_data: str, name: str) -> None:
    assert_error(client.post(url(project_with_data), json={"name": name, "config": TINY}), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize("body", [{"name": "x", "config": []}, {"name": "x", "config": "resnet"}, {"config": {}}])
def test_malformed_bodies_are_refused(client, project_with_data: str, body: dict) -> None:
    assert_error(client.post(url(project_with_data), json=body), 422, "VALIDATION_ERROR")


def test_openapi_describes_the_experiment_endpoints_with_real_types(client) -> None:
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    operations = {op["operationId"] for p in ("/api/training/{project_id}/experiments",
                                                "/api/training/{project_id}/experiments/{exp_id}")
                  for op in paths[p].values()}
    assert operations == {"ListExperiments", "CreateExperiment", "GetExperiment", "UpdateExperiment", "DeleteExperiment"}
    assert "ExperimentConfig" in schema["components"]["schemas"]
