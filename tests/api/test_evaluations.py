"""``/api/evaluation`` (reference section 5): jobs with real worker processes, results, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_error
from tests.helpers.run_fixtures import wait_for

WORKER_TIMEOUT_S = 120


def _body(run, **overrides):
    return {"experiment_id": run.experiment_id, "run_id": run.run_id, **overrides}


def _wait_finished(client, project_id: str, eval_id: str) -> dict:
    def finished():
        data = client.get(f"/api/evaluation/{project_id}/{eval_id}").json()["data"]
        return data if data["status"] in ("completed", "failed") else None

    return wait_for(finished, WORKER_TIMEOUT_S, interval=0.3, what=f"evaluation {eval_id}")


@pytest.fixture
def pending_only(services) -> None:
    """Evaluations created in this test stay ``pending``: the queue has no CPU slot to start them in (deterministic 409s)."""
    services.settings.cpu_job_slots = 0


def test_evaluation_runs_in_a_worker_process_and_serves_metrics_and_results(client, trained_run, workspace_dir: Path) -> None:
    project = trained_run.project_id
    response = client.post(f"/api/evaluation/{project}", json=_body(trained_run, checkpoint="best", split_subset="test",
                                                                     split_index=0, batch_size=4))
    assert response.status_code == 201, response.text
    created = response.json()["data"]
    assert created["status"] == "pending" and created["id"].startswith("eval-")
    assert created["progress"]["total"] == 6
    done = _wait_finished(client, project, created["id"])
    assert done["status"] == "completed", done["error"]
    assert done["progress"] == {"done": 6, "total": 6}
    metrics = done["metrics"]
    assert set(metrics) >= {"accuracy", "loss", "macro", "weighted", "per_class", "confusion_matrix"}
    assert "curves" not in metrics  # readable by default: the curve points only when asked for
    with_curves = client.get(f"/api/evaluation/{project}/{created['id']}", params={"include": "curves"}).json()["data"]
    assert set(with_curves["metrics"]["curves"]) == set(metrics["per_class"])
    assert {k: v for k, v in with_curves["metrics"].items() if k != "curves"} == metrics
    assert client.get(f"/api/evaluation/{project}/{created['id']}", params={"include": "everything"}).status_code == 422
    assert sum(c["support"] for c in metrics["per_class"].values()) == 6
    assert (workspace_dir / "projects" / project / "evaluations" / created["id"] / "evaluation.log").is_file()

    listed = client.get(f"/api/evaluation/{project}").json()["data"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert listed[0]["accuracy"] == metrics["accuracy"] and "metrics" not in listed[0]

    page = client.get(f"/api/evaluation/{project}/{created['id']}/results", params={"page_size": 4}).json()["data"]
    assert page["total"] == 6 and page["pages"] == 2 and len(page["items"]) == 4
    names = [i["filename"] for i in page["items"]]
    assert names == sorted(names)
    capped = client.get(f"/api/evaluation/{project}/{created['id']}/results", params={"page_size": 100_000}).json()["data"]
    assert capped["page_size"] == 500 and capped["pages"] == 1 and len(capped["items"]) == 6  # capped, as image pages
    beyond = client.get(f"/api/evaluation/{project}/{created['id']}/results", params={"page": 99}).json()["data"]
    assert beyond["items"] == [] and beyond["total"] == 6 and beyond["page"] == 99
    errors = client.get(f"/api/evaluation/{project}/{created['id']}/results",
                        params={"sort_by": "error", "filter_correct": "false"}).json()["data"]
    assert errors["total"] == 6 - round(metrics["accuracy"] * 6)
    losses = [i["loss"] for i in errors["items"]]
    assert losses == sorted(losses, reverse=True) and not any(i["correct"] for i in errors["items"])
    circles = client.get(f"/api/evaluation/{project}/{created['id']}/results", params={"filter_class": "circle"}).json()["data"]
    assert circles["total"] == 2 and {i["ground_truth"]["class_name"] for i in circles["items"]} == {"circle"}

    assert client.delete(f"/api/evaluation/{project}/{created['id']}").json()["data"] == {"id": created["id"], "deleted": True}
    assert_error(client.get(f"/api/evaluation/{project}/{created['id']}"), 404, "NOT_FOUND")
    assert not (workspace_dir / "projects" / project / "evaluations" / created["id"]).exists()


def test_the_default_split_is_the_one_the_run_trained_on_and_a_deleted_one_is_a_conflict(
        client, trained_run, pending_only) -> None:
    project = trained_run.project_id
    created = client.post(f"/api/evaluation/{project}", json=_body(trained_run)).json()["data"]
    assert created["split_index"] == 0 and created["split_name"] == "default"

    assert client.delete(f"/api/splits/{project}/0").status_code == 200
    error = assert_error(client.post(f"/api/evaluation/{project}", json=_body(trained_run)), 409, "CONFLICT")
    assert "'default'" in error["message"] and "deleted" in error["message"]

def test_results_before_completion_are_a_conflict(client, trained_run, pending_only) -> None:
    created = client.post(f"/api/evaluation/{trained_run.project_id}", json=_body(trained_run)).json()["data"]
    assert_error(client.get(f"/api/evaluation/{trained_run.project_id}/{created['id']}/results"), 409, "CONFLICT")


def test_split_subset_accepts_a_list_and_devices(client, trained_run, pending_only) -> None:
    response = client.post(f"/api/evaluation/{trained_run.project_id}",
                           json=_body(trained_run, split_subset=["val", "test"], devices=["cpu"], checkpoint="last"))
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["split_subset"] == ["val", "test"] and data["devices"] == ["cpu"] and data["checkpoint"] == "last"
    assert data["progress"]["total"] == 12 and data["split_index"] == 0


@pytest.mark.parametrize(
    ("overrides", "resource"),
    [
        ({"experiment_id": "exp-00000000"}, "experiment"),
        ({"run_id": "run-00000000"}, "run"),
        ({"split_index": 7}, "split"),
    ],
)
def test_unknown_experiment_run_or_split_is_not_found(client, trained_run, overrides, resource) -> None:
    error = assert_error(client.post(f"/api/evaluation/{trained_run.project_id}", json=_body(trained_run, **overrides)),
                         404, "NOT_FOUND")
    assert error["details"]["resource"] == resource


def test_a_run_without_that_checkpoint_is_a_conflict(client, trained_run) -> None:
    """The run exists and the request is well formed: the run's state refuses it (DESIGN section 2)."""
    (trained_run.run_dir / "checkpoints" / "last.ckpt").unlink()
    error = assert_error(client.post(f"/api/evaluation/{trained_run.project_id}", json=_body(trained_run, checkpoint="last")),
                         409, "CONFLICT")
    assert error["details"]["resource"] == "checkpoint"


def test_unknown_project_is_not_found(client, trained_run) -> None:
    assert_error(client.post("/api/evaluation/proj-00000000", json=_body(trained_run)), 404, "NOT_FOUND")
    assert_error(client.get("/api/evaluation/proj-00000000"), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"checkpoint": "middle"}, "checkpoint"),
        ({"split_subset": "holdout"}, "split_subset"),
        ({"split_subset": []}, "split_subset"),
        ({"batch_size": 0}, "batch_size"),
        ({"devices": ["gpu:97"]}, "devices"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(client, trained_run, overrides, field) -> None:
    error = assert_error(client.post(f"/api/evaluation/{trained_run.project_id}", json=_body(trained_run, **overrides)),
                         422, "VALIDATION_ERROR")
    named = error["details"].get("field") or error["details"].get("fields") or []
    assert field in (named if isinstance(named, list) else [named]), error


@pytest.mark.parametrize(
    "params",
    [{"sort_by": "size"}, {"sort_order": "up"}, {"page_size": 0}, {"page": 0}, {"filter_correct": "maybe"}],
)
def test_invalid_result_queries_are_rejected_with_an_envelope(client, trained_run, pending_only, params) -> None:
    created = client.post(f"/api/evaluation/{trained_run.project_id}", json=_body(trained_run)).json()["data"]
    response = client.get(f"/api/evaluation/{trained_run.project_id}/{created['id']}/results", params=params)
    assert response.status_code in (400, 422), response.text
    assert response.json()["status"] == "error"


@pytest.mark.parametrize(
    "eval_id",
    ["eval-../../etc", "..%2F..%2Fetc", "eval-ABCDEFGH", "eval-abcdefgh%00", "eval-abcdefghi", "%2e%2e", "eval-abcdefgh%0A"],
)
def test_hostile_evaluation_ids_are_not_found(client, trained_run, eval_id: str) -> None:
    project = trained_run.project_id
    for response in (
        client.get(f"/api/evaluation/{project}/{eval_id}"),
        client.get(f"/api/evaluation/{project}/{eval_id}/results"),
        client.delete(f"/api/evaluation/{project}/{eval_id}"),
    ):
        assert response.status_code == 404, (eval_id, response.text)
        assert response.json()["status"] == "error"
