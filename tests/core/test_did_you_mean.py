"""Unknown names come back with the closest known ones ("did you mean"), in the message and in the details."""

from __future__ import annotations

import pytest

from modelyard.core.errors import UnknownArchitectureError, did_you_mean


def test_close_names_are_suggested_case_insensitively() -> None:
    assert did_you_mean("resnt18", ["resnet18", "resnet50", "simple_cnn"])[0] == "resnet18"
    assert did_you_mean("ONXX", ["onnx", "torchscript"]) == ["onnx"]
    assert did_you_mean("zzzz", ["onnx", "torchscript"]) == []


def test_the_error_names_the_suggestion_first_and_still_lists_everything() -> None:
    error = UnknownArchitectureError("resnet81", ["resnet18", "resnet50", "simple_cnn"], field="model.architecture")
    assert error.message.startswith("Unknown architecture 'resnet81'. Did you mean 'resnet18'")
    assert error.details["suggestions"][0] == "resnet18"
    assert error.details["available"] == ["resnet18", "resnet50", "simple_cnn"]


@pytest.mark.parametrize(("section", "value", "expected"), [
    ({"model": {"architecture": "resnet_18"}}, None, "resnet18"),
    ({"data": {"augmentations": {"train": [{"name": "RandomHorizontalFlp"}]}}}, None, "RandomHorizontalFlip"),
])
def test_experiment_configs_suggest_architectures_and_augmentations(client, project_id, section, value, expected) -> None:
    response = client.post(f"/api/training/{project_id}/experiments", json={"name": "typo", "config": section})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert f"Did you mean '{expected}'" in error["message"], error
    assert expected in error["details"]["suggestions"]


def test_export_formats_are_suggested(client, trained_run) -> None:
    response = client.post(f"/api/export/{trained_run.project_id}", json={
        "experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "format": "onxx"})
    assert response.status_code == 422, response.text
    assert "Did you mean 'onnx'" in response.json()["error"]["message"]
