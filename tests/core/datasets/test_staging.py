"""Dataset import staging and commit: importer records -> validated, copied, named images and one atomic dataset.json."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.core import ImageRecord, hookimpl
from modelyard.core.datasets import commit, layout
from modelyard.core.errors import ConflictError, ValidationError
from modelyard.core.jsonio import read_json
from modelyard.core.plugin_manager import PluginHost
from modelyard.core.services import Services, build_services
from modelyard.core.settings import Settings
from tests.core.datasets.factories import image_bytes, png_claiming, shapes_folder, write


def dataset(services: Services, project: str) -> dict:
    return read_json(services.workspace.dataset_json(project))


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def test_import_copies_images_under_flat_unique_names_keeping_source_path(services: Services, project: str, import_root: Path) -> None:
    write(import_root / "set" / "cat" / "a b.png", image_bytes(colour=1))
    write(import_root / "set" / "cat" / "sub" / "a b.png", image_bytes(colour=2))
    write(import_root / "set" / "Cat_a b.png", image_bytes(colour=3))  # unlabelled, same flat name ignoring case
    summary = services.datasets.import_local(project, str(import_root / "set"))
    assert summary["imported"] == 3 and summary["skipped"] == [] and summary["format"] == "imagefolder"
    by_source = {image["source_path"]: image["filename"] for image in dataset(services, project)["images"]}
    # the importer lists the root file first, so it keeps the plain name
    assert by_source == {"Cat_a b.png": "Cat_a_b.png", "cat/a b.png": "cat_a_b_2.png", "cat/sub/a b.png": "cat_sub_a_b.png"}
    assert files_under(services.workspace.images_dir(project)) == sorted(by_source.values())


def test_imported_image_records_follow_the_design_schema(services: Services, project: str, import_root: Path) -> None:
    data = image_bytes("JPEG", size=(20, 10), colour=9)
    write(import_root / "set" / "dog" / "x.jpeg", data)
    write(import_root / "set" / "loose.png", image_bytes(colour=4))
    services.datasets.import_local(project, str(import_root / "set"))
    doc = dataset(services, project)
    assert doc["version"] == 1 and doc["task"] == "classification"
    assert doc["source"]["kind"] == "local" and doc["source"]["format"] == "imagefolder"
    assert doc["source"]["imported_at"].endswith("Z")
    assert doc["classes"] == ["dog"] and doc["split_names"] == []
    assert doc["image_stats"] == {"num_images": 2, "min_width": 16, "max_width": 20, "min_height": 10, "max_height": 12,
                                  "formats": ["jpeg", "png"]}
    dog = next(image for image in doc["images"] if image["source_path"] == "dog/x.jpeg")
    import hashlib

    assert dog == {"filename": "dog_x.jpeg", "width": 20, "height": 10, "size": len(data), "format": "jpeg",
                   "sha256": hashlib.sha256(data).hexdigest(), "source_path": "dog/x.jpeg", "split": [],
                   "annotations": [{"type": "label", "class_id": 0, "class_name": "dog"}]}
    loose = next(image for image in doc["images"] if image["source_path"] == "loose.png")
    assert loose["annotations"] == []


def test_extension_follows_the_real_format(services: Services, project: str, import_root: Path) -> None:
    write(import_root / "set" / "cat" / "really_a_jpeg.png", image_bytes("JPEG"))
    services.datasets.import_local(project, str(import_root / "set"))
    image = dataset(services, project)["images"][0]
    assert (image["filename"], image["format"]) == ("cat_really_a_jpeg.jpg", "jpeg")


def test_exact_duplicates_are_stored_once_and_reported(services: Services, project: str, import_root: Path) -> None:
    same = image_bytes(colour=5)
    write(import_root / "one" / "cat" / "a.png", same)
    write(import_root / "one" / "dog" / "b.png", same)
    first = services.datasets.import_local(project, str(import_root / "one"))
    assert first["imported"] == 1
    assert first["duplicates"] == [{"path": "dog/b.png", "duplicate_of": "cat/a.png"}]
    write(import_root / "two" / "cat" / "again.png", same)
    write(import_root / "two" / "cat" / "new.png", image_bytes(colour=6))
    second = services.datasets.import_local(project, str(import_root / "two"))
    assert second["imported"] == 1 and second["num_images"] == 2
    assert second["duplicates"] == [{"path": "cat/again.png", "duplicate_of": "cat_a.png"}]
    assert len(files_under(services.workspace.images_dir(project))) == 2


def test_symlinks_fifos_and_hard_links_are_skipped_with_a_reason(services: Services, project: str, import_root: Path,
                                                                 tmp_path: Path) -> None:
    folder = import_root / "set" / "cat"
    write(folder / "good.png", image_bytes(colour=1))
    outside = write(tmp_path / "secret.png", image_bytes(colour=2))
    os.symlink(outside, folder / "link_out.png")
    os.symlink(folder / "good.png", folder / "link_in.png")
    os.mkfifo(folder / "pipe.png")
    os.link(write(import_root / "elsewhere.png", image_bytes(colour=3)), folder / "hard.png")
    summary = services.datasets.import_local(project, str(import_root / "set"))
    reasons = {item["path"]: item["reason"] for item in summary["skipped"]}
    assert summary["imported"] == 1
    assert reasons["cat/link_out.png"].startswith("symbolic link")
    assert reasons["cat/link_in.png"].startswith("symbolic link")
    assert reasons["cat/pipe.png"] == "not a regular file (FIFO)"
    assert reasons["cat/hard.png"].startswith("hard link")


def test_invalid_files_are_skipped_with_their_reason(services: Services, project: str, import_root: Path) -> None:
    folder = import_root / "set" / "cat"
    write(folder / "good.png", image_bytes(colour=1))
    write(folder / "notes.png", b"just text, not a picture\n")
    write(folder / "bomb.png", png_claiming(50_000, 50_000))
    truncated = image_bytes(size=(64, 64), colour=7)
    write(folder / "cut.png", truncated[: len(truncated) // 2])
    summary = services.datasets.import_local(project, str(import_root / "set"))
    reasons = {item["path"]: item["reason"] for item in summary["skipped"]}
    assert summary["imported"] == 1
    assert "not a recognised image" in reasons["cat/notes.png"]
    assert "decompression bomb" in reasons["cat/bomb.png"]
    assert "corrupt or truncated" in reasons["cat/cut.png"]


def test_pixel_limit_comes_from_settings_and_bounds_the_file_size(workspace_dir: Path, import_root: Path) -> None:
    services = build_services(Settings(workspace=workspace_dir, import_roots=[import_root], max_image_pixels=100))
    project = services.projects.create("p").id
    write(import_root / "set" / "cat" / "small.png", image_bytes(size=(10, 10)))
    write(import_root / "set" / "cat" / "big.png", image_bytes(size=(11, 10)))
    write(import_root / "set" / "cat" / "huge_file.png", image_bytes(size=(10, 10)) + bytes(2 * 1024 * 1024))
    summary = services.datasets.import_local(project, str(import_root / "set"))
    reasons = {item["path"]: item["reason"] for item in summary["skipped"]}
    assert summary["imported"] == 1
    assert "more than the limit of 100" in reasons["cat/big.png"]
    assert "larger than any image within the pixel limit" in reasons["cat/huge_file.png"]  # never read into memory


def test_csv_rows_naming_files_outside_the_folder_are_skipped(services: Services, project: str, import_root: Path,
                                                              tmp_path: Path) -> None:
    folder = import_root / "csvset"
    write(folder / "a.png", image_bytes(colour=1))
    write(import_root / "sibling.png", image_bytes(colour=2))
    secret = write(tmp_path / "secret.png", image_bytes(colour=3))
    (folder / "labels.csv").write_text(
        f"filename,label\na.png,cat\n../sibling.png,dog\n{secret},dog\nmissing.png,cat\n", encoding="utf-8"
    )
    summary = services.datasets.import_local(project, str(folder))
    reasons = {item["path"]: item["reason"] for item in summary["skipped"]}
    assert summary["format"] == "csv" and summary["imported"] == 1
    assert reasons == {"../sibling.png": "outside the import folder", str(secret): "outside the import folder",
                       "missing.png": "file not found"}


def test_merge_import_adds_classes_and_rewrites_class_ids(services: Services, project: str, import_root: Path) -> None:
    shapes_folder(import_root / "one", per_class=2, shapes=("circle", "square"))
    services.datasets.import_local(project, str(import_root / "one"))
    shapes_folder(import_root / "two", per_class=2, shapes=("star", "triangle"), seed=1)
    (import_root / "two" / "star").rename(import_root / "two" / "apple")  # sorts before the existing classes
    summary = services.datasets.import_local(project, str(import_root / "two"))
    doc = dataset(services, project)
    assert summary["classes"] == doc["classes"] == ["apple", "circle", "square", "triangle"]
    for image in doc["images"]:
        (label,) = image["annotations"]
        assert doc["classes"][label["class_id"]] == label["class_name"]
    assert summary["num_images"] == len(doc["images"]) == 8


def test_replace_import_discards_previous_images_and_thumbnails(services: Services, project: str, import_root: Path) -> None:
    shapes_folder(import_root / "one", per_class=2, shapes=("circle",))
    services.datasets.import_local(project, str(import_root / "one"))
    services.datasets.thumbnail(project, "circle_0000.png")
    assert files_under(services.workspace.thumbs_dir(project))
    write(import_root / "two" / "dog" / "d.png", image_bytes(colour=11))
    summary = services.datasets.import_local(project, str(import_root / "two"), replace=True)
    assert summary["imported"] == 1 and summary["num_images"] == 1 and summary["classes"] == ["dog"]
    assert files_under(services.workspace.images_dir(project)) == ["dog_d.png"]
    assert files_under(services.workspace.thumbs_dir(project)) == []
    assert [image["filename"] for image in dataset(services, project)["images"]] == ["dog_d.png"]


def test_train_val_test_folders_become_the_source_split(services: Services, project: str, import_root: Path) -> None:
    for subset, colour in (("train", 1), ("val", 2), ("test", 3)):
        write(import_root / "set" / subset / "cat" / f"{subset}.png", image_bytes(colour=colour))
    services.datasets.import_local(project, str(import_root / "set"))
    doc = dataset(services, project)
    assert doc["split_names"] == ["source"]
    assert {image["source_path"]: (image["split"], image["source_subset"]) for image in doc["images"]} == {
        "train/cat/train.png": (["train"], "train"),
        "val/cat/val.png": (["val"], "val"),
        "test/cat/test.png": (["test"], "test"),
    }


def test_images_imported_after_a_split_get_none_in_it(services: Services, project: str, import_root: Path) -> None:
    from modelyard.core.datasets.splits import check_ratios

    shapes_folder(import_root / "one", per_class=3, shapes=("circle",))
    services.datasets.import_local(project, str(import_root / "one"))
    services.splits.create(project, "first", check_ratios(0.5, 0.5), seed=1)
    write(import_root / "two" / "circle" / "late.png", image_bytes(colour=42))
    services.datasets.import_local(project, str(import_root / "two"))
    late = next(image for image in dataset(services, project)["images"] if image["source_path"] == "circle/late.png")
    assert late["split"] == ["none"]


def test_import_with_nothing_valid_is_refused_and_writes_nothing(services: Services, project: str, import_root: Path) -> None:
    write(import_root / "set" / "cat" / "notes.png", b"text")
    with pytest.raises(ValidationError, match="No importable images") as caught:
        services.datasets.import_local(project, str(import_root / "set"))
    assert caught.value.details["skipped"][0]["path"] == "cat/notes.png"
    assert not services.workspace.dataset_dir(project).exists()
    assert files_under(services.workspace.staging_dir) == []


class CrashingImporter:
    """A third-party importer with a bug: it yields two good records, then raises."""

    id = "crashing"
    name = "Crashing"
    description = "fails half-way"

    def detect(self, root: Path) -> bool:
        return False

    def read(self, root: Path) -> Iterator[ImageRecord]:
        for path in sorted(root.rglob("*.png"))[:2]:
            yield ImageRecord(path=path, source_path=path.relative_to(root).as_posix(), label="cat")
        raise RuntimeError("plugin bug")


class CrashingPlugin:
    @hookimpl
    def register_importers(self, registry) -> None:  # type: ignore[no-untyped-def]
        registry.add(CrashingImporter())


@pytest.fixture
def services_with_crashing_importer(settings: Settings) -> Services:
    host = PluginHost(disabled=set()).load_all()
    host.add_plugin(CrashingPlugin(), name="crashing")
    return build_services(settings, plugins=host)


def snapshot(services: Services, project: str) -> tuple[bytes, list[str], list[str]]:
    return (
        services.workspace.dataset_json(project).read_bytes(),
        files_under(services.workspace.dataset_dir(project)),
        files_under(services.workspace.staging_dir),
    )


def test_importer_crash_leaves_previous_dataset_untouched(services_with_crashing_importer: Services, import_root: Path) -> None:
    services = services_with_crashing_importer
    project = services.projects.create("p").id
    shapes_folder(import_root / "one", per_class=2, shapes=("circle",))
    services.datasets.import_local(project, str(import_root / "one"))
    before = snapshot(services, project)
    shapes_folder(import_root / "two", per_class=3, shapes=("square",), seed=3)
    with pytest.raises(ValidationError, match="'crashing' importer could not read the folder: RuntimeError: plugin bug"):
        services.datasets.import_local(project, str(import_root / "two"), format="crashing", replace=True)
    assert snapshot(services, project) == before


@pytest.mark.parametrize("replace", [False, True])
def test_disk_full_while_writing_dataset_json_rolls_the_import_back(services: Services, project: str, import_root: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, replace: bool) -> None:
    shapes_folder(import_root / "one", per_class=2, shapes=("circle",))
    services.datasets.import_local(project, str(import_root / "one"))
    services.datasets.list_images(project)  # as a server does: the index (and its cache file) exists before
    before = snapshot(services, project)

    def disk_full(path: Path, obj: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    @contextlib.contextmanager
    def full_writer(path: Path) -> Iterator[object]:
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    # the disk is the boundary we fake: for the whole-document writer and the streamed append (a new class sorting
    # last: the import is appended unless replacing; test_append.py fails that path after the moves too)
    monkeypatch.setattr(commit, "atomic_write_json", disk_full)
    monkeypatch.setattr(layout, "atomic_writer", full_writer)  # the streamed writers open their temp through layout.replaced
    shapes_folder(import_root / "two", per_class=2, shapes=("square",), seed=3)
    with pytest.raises(OSError, match="No space left"):
        services.datasets.import_local(project, str(import_root / "two"), replace=replace)
    assert snapshot(services, project) == before


def test_import_clear_and_split_delete_are_refused_while_a_run_is_training(services: Services, project: str,
                                                                          import_root: Path) -> None:
    from modelyard.core.datasets.splits import check_ratios
    from modelyard.core.jsonio import atomic_write_json

    shapes_folder(import_root / "one", per_class=2, shapes=("circle",))
    services.datasets.import_local(project, str(import_root / "one"))
    services.splits.create(project, "s", check_ratios(0.5, 0.5), seed=0)
    before = snapshot(services, project)
    run_dir = services.workspace.experiments_dir(project) / "exp-aaaaaaaa" / "runs" / "run-aaaaaaaa"
    atomic_write_json(run_dir / "run.json", {"id": "run-aaaaaaaa", "status": "running"})  # as a worker records it
    with pytest.raises(ConflictError, match="while a run is training: run-aaaaaaaa"):
        services.datasets.import_local(project, str(import_root / "one"), replace=True)
    with pytest.raises(ConflictError, match="while a run is training"):
        services.datasets.clear(project)
    with pytest.raises(ConflictError, match="while a run is training"):
        services.splits.delete(project, 0)
    assert snapshot(services, project) == before


class ManifestImporter:
    """A third-party importer whose ``validate(root, task)`` refuses a folder without its manifest (0.3)."""

    id = "manifest"
    name = "Manifest"
    description = "images listed in manifest.txt"

    def __init__(self) -> None:
        self.calls: list[tuple[Path, str]] = []

    def detect(self, root: Path) -> bool:
        return False

    def validate(self, root: Path, task: str) -> None:
        self.calls.append((root, task))
        if not (root / "manifest.txt").is_file():
            raise ValidationError("manifest.txt is missing from the folder")

    def read(self, root: Path) -> Iterator[ImageRecord]:
        for line in (root / "manifest.txt").read_text().split():
            yield ImageRecord(path=root / line, source_path=line, label="cat")


def test_an_importers_validate_refuses_a_folder_before_anything_is_read(settings: Settings, import_root: Path) -> None:
    importer = ManifestImporter()

    class Plugin:
        @hookimpl
        def register_importers(self, registry) -> None:  # type: ignore[no-untyped-def]
            registry.add(importer)

    host = PluginHost(disabled=set()).load_all()
    host.add_plugin(Plugin(), name="manifest")
    services = build_services(settings, plugins=host)
    project = services.projects.create("p").id
    shapes_folder(import_root / "set", per_class=2, shapes=("circle",))

    with pytest.raises(ValidationError, match="^manifest.txt is missing from the folder$") as caught:
        services.datasets.import_local(project, str(import_root / "set"), format="manifest")
    assert caught.value.field == "path"
    assert importer.calls == [((import_root / "set").resolve(), "classification")]
    assert not services.workspace.dataset_dir(project).exists() or dataset(services, project)["images"] == []

    first = sorted(p.relative_to(import_root / "set").as_posix() for p in (import_root / "set").rglob("*.png"))[0]
    (import_root / "set" / "manifest.txt").write_text(first)
    assert services.datasets.import_local(project, str(import_root / "set"), format="manifest")["imported"] == 1
