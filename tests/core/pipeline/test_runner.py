"""The pipeline's steps through the real services: what is reused, what is made, and what is refused."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelyard.core.datasets.zipsafe import HostileArchiveError
from modelyard.core.errors import ConflictError, ForbiddenError, ValidationError
from modelyard.core.jsonio import read_json
from modelyard.core.pipeline.runner import (
    RESULT_FILE,
    SilentReporter,
    ensure_dataset,
    ensure_project,
    ensure_split,
    run_pipeline,
)
from modelyard.core.pipeline.schema import DatasetSpec, ProjectSpec, RatiosSpec, SplitSpec, parse_pipeline
from modelyard.core.sample_data import generate_shapes
from modelyard.core.services import Services

TINY_CONFIG = {
    "model": {"architecture": "simple_cnn"},
    "data": {"image_size": [16, 16], "batch_size": 8, "num_workers": 0, "cache": "none"},
    "training": {"max_epochs": 1, "scheduler": {"name": "none"}},
    "hardware": {"devices": ["cpu"]},
}


@pytest.fixture
def shapes(import_root: Path) -> Path:
    """12 generated shape images (3 per class) inside the services' import root."""
    folder = import_root / "shapes"
    generate_shapes(folder, per_class=3, size=16, seed=1)
    return folder


def split_spec(seed: int = 7, name: str = "s") -> SplitSpec:
    return SplitSpec(name=name, ratios=RatiosSpec(train=0.6, val=0.2, test=0.2), seed=seed)


def test_a_project_is_reused_by_name_and_created_otherwise(services: Services) -> None:
    existing = services.projects.create("Shapes")
    assert ensure_project(services, ProjectSpec(name="Shapes")) == {
        "id": existing.id, "name": "Shapes", "task": "classification", "created": False}
    made = ensure_project(services, ProjectSpec(name="Other", description="from a pipeline"))
    assert made["created"] is True and services.projects.get(made["id"]).description == "from a pipeline"


def test_a_project_of_that_name_with_another_task_is_a_conflict(services: Services, second_task: str) -> None:
    services.projects.create("Shapes", task=second_task)
    with pytest.raises(ConflictError, match="task"):
        ensure_project(services, ProjectSpec(name="Shapes"))
    assert len(services.projects.list()) == 1


def test_the_dataset_is_imported_once_and_skipped_while_the_source_is_unchanged(services: Services, shapes: Path) -> None:
    project = services.projects.create("P").id
    first = ensure_dataset(services, DatasetSpec(path=str(shapes)), project, shapes.parent)
    assert (first["action"], first["imported"], first["num_images"]) == ("imported", 12, 12)
    before = services.workspace.dataset_json(project).stat().st_mtime_ns
    again = ensure_dataset(services, DatasetSpec(path="shapes"), project, shapes.parent)  # relative to the file
    assert again["action"] == "skipped" and again["fingerprint"] == first["fingerprint"]
    assert services.workspace.dataset_json(project).stat().st_mtime_ns == before


def test_a_changed_source_is_merged_in_or_replaces_the_dataset_when_asked(services: Services, shapes: Path) -> None:
    project = services.projects.create("P").id
    ensure_dataset(services, DatasetSpec(path=str(shapes)), project, shapes.parent)
    generate_shapes(shapes.parent / "more", per_class=1, size=16, seed=99, shapes=("circle",))
    shutil.copy(shapes.parent / "more" / "circle" / "circle_0000.png", shapes / "circle" / "extra.png")
    merged = ensure_dataset(services, DatasetSpec(path=str(shapes)), project, shapes.parent)
    assert (merged["action"], merged["imported"], merged["num_images"]) == ("imported", 1, 13)
    (shapes / "circle" / "extra.png").unlink()
    replaced = ensure_dataset(services, DatasetSpec(path=str(shapes), replace=True), project, shapes.parent)
    assert (replaced["action"], replaced["num_images"]) == ("replaced", 12)


def test_a_relabelled_image_makes_the_source_differ(services: Services, shapes: Path) -> None:
    project = services.projects.create("P").id
    ensure_dataset(services, DatasetSpec(path=str(shapes)), project, shapes.parent)
    (shapes / "square").mkdir(exist_ok=True)
    shutil.move(shapes / "circle" / "circle_0000.png", shapes / "square" / "circle_0000.png")
    result = ensure_dataset(services, DatasetSpec(path=str(shapes), replace=True), project, shapes.parent)
    assert result["action"] == "replaced"
    dataset = read_json(services.workspace.dataset_json(project))
    labels = {img["source_path"]: img["annotations"][0]["class_name"] for img in dataset["images"]}
    assert labels["square/circle_0000.png"] == "square"


def test_a_zip_source_is_extracted_safely_imported_and_recognised_next_time(services: Services, shapes: Path,
                                                                             tmp_path: Path) -> None:
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(shapes.rglob("*.png")):
            zf.write(path, path.relative_to(shapes).as_posix())
        zf.writestr("../escaped.png", b"not really an image")
    project = services.projects.create("P").id
    with pytest.raises(HostileArchiveError, match=r"\.\./escaped\.png"):  # refuses the whole archive
        ensure_dataset(services, DatasetSpec(path=str(archive)), project, tmp_path)
    assert not (tmp_path / "escaped.png").exists() and not (services.workspace.root / "escaped.png").exists()
    assert not services.workspace.dataset_json(project).exists()
    clean = tmp_path / "clean.zip"
    with zipfile.ZipFile(clean, "w") as zf:
        for path in sorted(shapes.rglob("*.png")):
            zf.write(path, path.relative_to(shapes).as_posix())
    first = ensure_dataset(services, DatasetSpec(path="clean.zip"), project, tmp_path)
    assert (first["action"], first["num_images"]) == ("imported", 12)
    assert ensure_dataset(services, DatasetSpec(path="clean.zip"), project, tmp_path)["action"] == "skipped"
    with pytest.raises(HostileArchiveError):  # comparing extracts too, just as safely
        ensure_dataset(services, DatasetSpec(path=str(archive)), project, tmp_path)
    assert list(services.workspace.staging_dir.iterdir()) == []  # nothing extracted is left behind


def test_a_folder_outside_the_allowed_roots_is_refused(services: Services, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    generate_shapes(outside, per_class=1, size=16, seed=1)
    project = services.projects.create("P").id
    with pytest.raises(ForbiddenError):
        ensure_dataset(services, DatasetSpec(path=str(outside)), project, tmp_path)


def test_a_link_to_a_file_outside_the_source_is_neither_imported_nor_hashed(services: Services, shapes: Path,
                                                                            tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    shutil.copy(shapes / "star" / "star_0000.png", secret)
    (shapes / "star" / "link.png").symlink_to(secret)
    project = services.projects.create("P").id
    result = ensure_dataset(services, DatasetSpec(path=str(shapes)), project, shapes.parent)
    assert result["num_images"] == 12 and result["skipped_files"] == 1
    assert ensure_dataset(services, DatasetSpec(path=str(shapes)), project, shapes.parent)["action"] == "skipped"


def test_a_split_is_reused_only_when_it_holds_exactly_what_its_ratios_and_seed_give(services: Services,
                                                                                    shapes: Path) -> None:
    project = services.projects.create("P").id
    ensure_dataset(services, DatasetSpec(path=str(shapes)), project, shapes.parent)
    made = ensure_split(services, split_spec(seed=7), project)
    assert (made["index"], made["reused"]) == (0, False)
    again = ensure_split(services, split_spec(seed=7), project)
    assert (again["index"], again["reused"], again["assignment_hash"]) == (0, True, made["assignment_hash"])
    with pytest.raises(ConflictError, match="another name") as error:
        ensure_split(services, split_spec(seed=8), project)
    assert error.value.details["field"] == "split.name"
    other = ensure_split(services, split_spec(seed=8, name="s2"), project)
    assert (other["index"], other["reused"]) == (1, False)
    assert read_json(services.workspace.dataset_json(project))["split_names"] == ["s", "s2"]


class DeleteImagesWhenTrainingStarts(SilentReporter):
    """A reporter that removes the project's images as the training step begins (a disk going away)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.steps: list[str] = []

    def step(self, title: str) -> None:
        self.steps.append(title)
        if title.startswith("training"):
            (project,) = self.services.workspace.project_ids()
            shutil.rmtree(self.services.workspace.images_dir(project))

    def progress(self, label: str) -> Callable[[int, int], None]:
        return lambda done, total: None


def pipeline_document(shapes: Path) -> dict[str, Any]:
    return {
        "project": {"name": "P"},
        "dataset": {"path": str(shapes)},
        "split": {"name": "s", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},
        "experiment": {"name": "e", "config": TINY_CONFIG},
        "exports": [{"format": "onnx"}],
    }


def test_a_failed_training_ends_the_pipeline_and_still_writes_its_result(services: Services, shapes: Path) -> None:
    reporter = DeleteImagesWhenTrainingStarts(services)
    outcome = run_pipeline(services, parse_pipeline(pipeline_document(shapes)), shapes.parent, reporter,
                           progress_bar=False)
    assert not outcome.ok and outcome.errors[0].startswith("training failed")
    assert outcome.result_path is not None and outcome.result_path.name == RESULT_FILE
    written = read_json(outcome.result_path)
    assert written["status"] == "failed" and written["run"]["status"] == "failed"
    assert "evaluation" not in written and "exports" not in written
    assert not any(step.startswith(("evaluation", "export")) for step in reporter.steps)


def test_an_invalid_pipeline_creates_nothing(services: Services, shapes: Path) -> None:
    document = pipeline_document(shapes)
    document["experiment"]["config"] = {**TINY_CONFIG, "model": {"architecture": "no_such_net"}}
    with pytest.raises(ValidationError, match="no_such_net"):
        run_pipeline(services, parse_pipeline(document), shapes.parent, progress_bar=False)
    assert services.projects.list() == []
