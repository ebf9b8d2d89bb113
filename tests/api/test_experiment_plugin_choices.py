"""Loggers, callbacks, losses and metrics a config names are checked when the experiment is saved (422 naming the field)."""

from __future__ import annotations

import pytest

from modelyard.core.training import plugin_choices
from tests.conftest import assert_error
from tests.helpers.datasets import write_shapes_dataset

TINY = {"model": {"architecture": "simple_cnn"}, "data": {"image_size": [16, 16]}, "training": {"max_epochs": 2}}


@pytest.fixture
def project_with_data(project_id: str, services) -> str:  # type: ignore[no-untyped-def]
    write_shapes_dataset(services.workspace.project_dir(project_id), per_class=3, size=16)
    return project_id


def url(project_id: str, experiment_id: str = "") -> str:
    return f"/api/training/{project_id}/experiments" + (f"/{experiment_id}" if experiment_id else "")


def post(client, project_id: str, **config: object):  # type: ignore[no-untyped-def]
    return client.post(url(project_id), json={"name": "x", "config": {**TINY, **config}})


def refused(response, field: str) -> dict:  # type: ignore[no-untyped-def]
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["details"]["field"] == field, error
    return error


def test_loggers_callbacks_loss_and_metrics_are_stored_as_chosen(client, project_with_data: str, settings) -> None:  # type: ignore[no-untyped-def]
    store = (settings.workspace / "mlruns").resolve().as_uri()
    response = post(client, project_with_data, logging={"tensorboard": {}, "mlflow": {"tracking_uri": store}},
                    training={"loss": {"name": "focal", "options": {"gamma": 1.0}}, "metrics": [{"name": "recall"}]})
    assert response.status_code == 201, response.text
    config = response.json()["data"]["config"]
    assert config["logging"] == {"tensorboard": {}, "mlflow": {"tracking_uri": store}}
    assert config["callbacks"] == []
    assert config["training"]["loss"]["name"] == "focal" and config["training"]["metrics"] == [{"name": "recall", "options": {}}]


def test_the_defaults_log_to_the_run_files_only_with_cross_entropy(client, project_with_data: str) -> None:  # type: ignore[no-untyped-def]
    config = post(client, project_with_data).json()["data"]["config"]
    assert (config["logging"], config["callbacks"], config["training"]["metrics"]) == ({}, [], [])
    assert config["training"]["loss"] == {"name": "cross_entropy", "options": {}, "label_smoothing": 0.0,
                                          "class_weights": "none"}


def test_a_patch_with_null_switches_a_logger_off(client, project_with_data: str) -> None:  # type: ignore[no-untyped-def]
    created = post(client, project_with_data, logging={"tensorboard": {}}).json()["data"]
    response = client.patch(url(project_with_data, created["id"]), json={"config": {"logging": {"tensorboard": None}}})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["config"]["logging"] == {}


def test_an_unknown_logger_is_refused_with_the_loggers_there_are(client, project_with_data: str) -> None:  # type: ignore[no-untyped-def]
    error = refused(post(client, project_with_data, logging={"wandb": {}}), "config.logging.wandb")
    assert {"mlflow", "tensorboard"} <= set(error["details"]["available"])
    assert "Unknown logger 'wandb'" in error["message"]


@pytest.mark.parametrize(("options", "field"), [
    ({"tracking_url": "file:/x"}, "config.logging.mlflow.tracking_url"),
    ({"log_checkpoint": "yes"}, "config.logging.mlflow.log_checkpoint"),
    ({"tags": {"team": 3}}, "config.logging.mlflow.tags.team"),
    ({"tracking_uri": "ftp://example.org/mlruns"}, "config.logging.mlflow.tracking_uri"),
    ({"tracking_uri": "file:relative/mlruns"}, "config.logging.mlflow.tracking_uri"),
    ({"tracking_uri": "file:/etc/mlruns"}, "config.logging.mlflow.tracking_uri"),  # outside the workspace
    ({"experiment_name": "  "}, "config.logging.mlflow.experiment_name"),
])
def test_a_bad_logger_option_is_refused_naming_it(client, project_with_data: str, options: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    refused(post(client, project_with_data, logging={"mlflow": options}), field)


def test_a_logger_whose_package_is_missing_is_refused_with_the_install_hint(
    client, project_with_data: str, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    real = plugin_choices.module_available
    monkeypatch.setattr(plugin_choices, "module_available", lambda name: name != "mlflow" and real(name))
    error = refused(post(client, project_with_data, logging={"mlflow": {}}), "config.logging.mlflow")
    assert "pip install 'modelyard[mlflow]'" in error["message"] and error["details"]["missing"] == ["mlflow"]
    assert post(client, project_with_data, logging={"tensorboard": {}}).status_code == 201  # only mlflow is missing


def test_an_unknown_callback_or_a_logger_named_as_one_is_refused(client, project_with_data: str) -> None:  # type: ignore[no-untyped-def]
    refused(post(client, project_with_data, callbacks=[{"name": "nope"}]), "config.callbacks[0].name")
    error = refused(post(client, project_with_data, callbacks=[{"name": "mlflow"}]), "config.callbacks[0].name")
    assert "Unknown callback 'mlflow'" in error["message"]
    refused(post(client, project_with_data, callbacks=[{"options": {}}]), "config.callbacks[0].name")


def test_an_unknown_loss_or_a_bad_loss_option_is_refused(client, project_with_data: str) -> None:  # type: ignore[no-untyped-def]
    error = refused(post(client, project_with_data, training={"loss": {"name": "hinge"}}), "config.training.loss.name")
    assert {"cross_entropy", "focal"} <= set(error["details"]["available"])
    refused(post(client, project_with_data, training={"loss": {"name": "focal", "options": {"gamma": -1}}}),
            "config.training.loss.options.gamma")
    refused(post(client, project_with_data, training={"loss": {"options": {"gamma": 2}}}),
            "config.training.loss.options.gamma")  # cross_entropy takes no options


def test_unknown_duplicate_or_clashing_metrics_are_refused(client, project_with_data: str) -> None:  # type: ignore[no-untyped-def]
    refused(post(client, project_with_data, training={"metrics": [{"name": "auroc"}]}), "config.training.metrics[0].name")
    refused(post(client, project_with_data, training={"metrics": [{"name": "recall"}, {"name": "recall"}]}),
            "config.training.metrics[1].name")
    refused(post(client, project_with_data, training={"metrics": [{"name": "recall", "options": {"average": "micro"}}]}),
            "config.training.metrics[0].options.average")


def test_a_task_without_registered_losses_keeps_its_own(client) -> None:  # type: ignore[no-untyped-def]
    project = client.post("/api/projects", json={"name": "Boxes", "task": "object_detection"}).json()["data"]["id"]
    ok = client.post(url(project), json={"name": "own", "config": {"training": {"max_epochs": 1}}})
    assert ok.status_code == 201, ok.text
    error = refused(client.post(url(project), json={"name": "x", "config": {"training": {"loss": {"name": "focal"}}}}),
                    "config.training.loss.name")
    assert "computes its own loss" in error["message"]
    refused(client.post(url(project), json={"name": "x", "config": {"training": {"metrics": [{"name": "recall"}]}}}),
            "config.training.metrics[0].name")
