"""Splits API (reference section 3): stored inline in dataset.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_error
from tests.core.datasets.factories import image_bytes, shapes_folder, write

RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture
def imported(client, project_id: str, import_root: Path) -> str:
    """3 classes x 5 images plus one unlabelled image."""
    folder = shapes_folder(import_root / "shapes", per_class=5, shapes=("circle", "square", "star"))
    write(folder / "loose.png", image_bytes(colour=99))
    response = client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(folder)})
    assert response.status_code == 200, response.text
    return project_id


def dataset_json(workspace_dir: Path, project_id: str) -> dict:
    return json.loads((workspace_dir / "projects" / project_id / "dataset" / "dataset.json").read_text())


def create(client, project_id: str, name: str = "60-20-20", **body: object):
    return client.post(f"/api/splits/{project_id}", json={"name": name, "ratios": RATIOS, "seed": 42, **body})


def test_create_appends_the_split_to_dataset_json(client, imported: str, workspace_dir: Path) -> None:
    response = create(client, imported)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert (data["split_index"], data["name"]) == (0, "60-20-20")
    assert data["stats"] == {"train": 9, "val": 3, "test": 3, "none": 1}
    assert data["per_class"]["star"] == {"train": 3, "val": 1, "test": 1, "none": 0}
    assert data["warnings"] == ["1 unlabelled image(s) get 'none'"]
    doc = dataset_json(workspace_dir, imported)
    assert doc["split_names"] == ["60-20-20"]
    loose = next(image for image in doc["images"] if image["source_path"] == "loose.png")
    assert loose["split"] == ["none"]
    assert sorted(image["split"][0] for image in doc["images"]).count("train") == 9


def test_preview_matches_create_and_writes_nothing(client, imported: str, workspace_dir: Path) -> None:
    path = workspace_dir / "projects" / imported / "dataset" / "dataset.json"
    before = path.read_bytes()
    preview = client.get(f"/api/splits/{imported}/preview", params={**RATIOS, "seed": 42, "stratified": "true"})
    assert preview.status_code == 200, preview.text
    assert path.read_bytes() == before
    created = create(client, imported).json()["data"]
    assert preview.json()["data"] == {key: created[key] for key in ("stats", "per_class", "warnings")}


def test_preview_route_is_not_taken_for_a_split_index(client, imported: str) -> None:
    assert client.get(f"/api/splits/{imported}/preview").status_code == 200
    assert_error(client.get(f"/api/splits/{imported}/0"), 404, "NOT_FOUND")


def test_same_seed_gives_the_same_assignment(client, imported: str, workspace_dir: Path) -> None:
    create(client, imported, name="a")
    create(client, imported, name="b")
    create(client, imported, name="c", seed=7)
    assignments = [[image["split"][i] for image in dataset_json(workspace_dir, imported)["images"]] for i in range(3)]
    assert assignments[0] == assignments[1]
    assert assignments[0] != assignments[2]


def test_list_and_get_give_stats_and_per_class_distribution(client, imported: str) -> None:
    create(client, imported, name="first")
    create(client, imported, name="second", ratios={"train": 0.5}, stratified=False)
    listed = client.get(f"/api/splits/{imported}").json()["data"]
    assert [(s["split_index"], s["name"]) for s in listed] == [(0, "first"), (1, "second")]
    assert listed[1]["stats"]["none"] == 8  # half of the 15 labelled images (rounded) plus the unlabelled one
    detail = client.get(f"/api/splits/{imported}/0").json()["data"]
    assert detail["name"] == "first" and detail["per_class"]["circle"] == {"train": 3, "val": 1, "test": 1, "none": 0}


def test_delete_reindexes_the_remaining_splits(client, imported: str, workspace_dir: Path) -> None:
    create(client, imported, name="a")
    create(client, imported, name="b", seed=1)
    create(client, imported, name="c", seed=2)
    before = dataset_json(workspace_dir, imported)
    response = client.delete(f"/api/splits/{imported}/1")
    assert response.status_code == 200
    assert response.json()["data"] == {"split_index": 1, "name": "b", "deleted": True, "split_names": ["a", "c"]}
    after = dataset_json(workspace_dir, imported)
    assert after["split_names"] == ["a", "c"]
    for old, new in zip(before["images"], after["images"]):
        assert new["split"] == [old["split"][0], old["split"][2]]
    assert client.get(f"/api/splits/{imported}/1").json()["data"]["name"] == "c"
    assert_error(client.get(f"/api/splits/{imported}/2"), 404, "NOT_FOUND")


def test_duplicate_name_is_a_conflict(client, imported: str) -> None:
    create(client, imported, name="x")
    assert_error(create(client, imported, name="x"), 409, "CONFLICT")


@pytest.mark.parametrize("ratios", [
    {"train": 0.0, "val": 0.5, "test": 0.5},
    {"train": 0.9, "val": 0.2},
    {"train": 0.8, "val": -0.1},
    {"train": 0.8, "holdout": 0.2},
    {"val": 0.5},
])
def test_invalid_ratios_are_422(client, imported: str, ratios: dict) -> None:
    assert_error(client.post(f"/api/splits/{imported}", json={"name": "bad", "ratios": ratios}), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize("body", [{"name": "", "ratios": RATIOS}, {"name": "a/b", "ratios": RATIOS},
                                  {"name": "ok", "ratios": RATIOS, "colour": "red"}, {"name": "ok", "ratios": RATIOS, "seed": -1}])
def test_invalid_create_bodies_are_422(client, imported: str, body: dict) -> None:
    assert_error(client.post(f"/api/splits/{imported}", json=body), 422, "VALIDATION_ERROR")


def test_preview_leaves_out_shares_as_create_does_and_shows_80_10_10_when_given_none(client, imported: str) -> None:
    partial = client.get(f"/api/splits/{imported}/preview", params={"train": 0.7}).json()["data"]
    created = client.post(f"/api/splits/{imported}", json={"name": "partial", "ratios": {"train": 0.7}}).json()["data"]
    assert partial["stats"] == created["stats"] and partial["stats"]["val"] == partial["stats"]["test"] == 0
    default = client.get(f"/api/splits/{imported}/preview").json()["data"]
    full = client.get(f"/api/splits/{imported}/preview", params={"train": 0.8, "val": 0.1, "test": 0.1}).json()["data"]
    assert default == full
    assert_error(client.get(f"/api/splits/{imported}/preview", params={"val": 0.2}), 422, "VALIDATION_ERROR")

def test_invalid_preview_parameters_are_422(client, imported: str) -> None:
    assert_error(client.get(f"/api/splits/{imported}/preview", params={"train": 0.9, "val": 0.9}), 422, "VALIDATION_ERROR")
    assert_error(client.get(f"/api/splits/{imported}/preview", params={"train": "lots"}), 422, "VALIDATION_ERROR")


def test_split_of_an_empty_dataset_is_refused_but_preview_is_empty(client, project_id: str) -> None:
    assert_error(create(client, project_id), 409, "CONFLICT")  # well formed; the dataset's state refuses it
    preview = client.get(f"/api/splits/{project_id}/preview").json()["data"]
    assert preview["stats"] == {"train": 0, "val": 0, "test": 0, "none": 0}
    assert client.get(f"/api/splits/{project_id}").json()["data"] == []


def test_unknown_project_is_404(client) -> None:
    assert_error(client.get("/api/splits/proj-00000000"), 404, "NOT_FOUND")
    assert_error(create(client, "proj-00000000"), 404, "NOT_FOUND")


def test_small_classes_are_reported_as_warnings(client, project_id: str, import_root: Path) -> None:
    folder = shapes_folder(import_root / "s", per_class=6, shapes=("circle",))
    write(folder / "rare" / "one.png", image_bytes(colour=5))
    client.post(f"/api/datasets/{project_id}/import/local", json={"path": str(folder)})
    data = create(client, project_id).json()["data"]
    assert data["per_class"]["rare"] == {"train": 1, "val": 0, "test": 0, "none": 0}
    assert data["warnings"] == ["Class 'rare' has only 1 image(s), too few to stratify: no val/test image of this class"]


def test_deleting_a_split_moves_experiments_on_later_splits_down_with_it(client, imported: str) -> None:
    from tests.conftest import TINY_TRAINING_CONFIG

    for name in ("a", "b", "c"):
        created = client.post(f"/api/splits/{imported}", json={"name": name, "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}})
        assert created.status_code == 201, created.text
    experiments = {}
    for name, index in (("on-a", 0), ("on-b", 1), ("on-c", 2)):
        body = {"name": name, "config": {**TINY_TRAINING_CONFIG, "split_index": index}}
        response = client.post(f"/api/training/{imported}/experiments", json=body)
        assert response.status_code == 201, response.text
        experiments[name] = response.json()["data"]["id"]

    assert client.delete(f"/api/splits/{imported}/1").status_code == 200

    def split_index(name: str) -> int:
        return client.get(f"/api/training/{imported}/experiments/{experiments[name]}").json()["data"]["config"]["split_index"]

    assert [s["name"] for s in client.get(f"/api/splits/{imported}").json()["data"]] == ["a", "c"]
    assert (split_index("on-a"), split_index("on-c")) == (0, 1)  # still on splits a and c
    assert split_index("on-b") == 1  # its split is gone; left as it was
