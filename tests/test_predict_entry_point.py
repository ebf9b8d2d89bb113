"""``modelyard.predict.load``: an export bundle answers in Python exactly as the server's export model does.

A real ONNX export of the tiny trained run is bundled by the export service
(what ``GET /api/export/.../download?bundle=zip`` sends); the same images go
through ``services.predictions`` (the server's path) and through the bundle.
Hostile bundles must fail with ``BundleError`` before anything runs.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modelyard.core.export.bundle import preprocessing_document
from modelyard.core.jobs.foreground import export_or_follow
from modelyard.core.prediction.service import PredictOptions
from modelyard.core.records import DeploymentMetadata
from modelyard.core.services import Services
from modelyard.predict import BundleError, BundleModel, load
from tests.conftest import TrainedRun


class Exported:
    def __init__(self, run: TrainedRun, export_id: str, model: Path, bundle: Path) -> None:
        self.run, self.export_id, self.model, self.bundle = run, export_id, model, bundle


@pytest.fixture
def exported(services: Services, trained_run: TrainedRun) -> Exported:
    record = services.exports.create(trained_run.project_id, experiment_id=trained_run.experiment_id,
                                     run_id=trained_run.run_id, checkpoint="best", format="onnx")
    folder = services.workspace.exports_dir(trained_run.project_id) / record.id
    export_or_follow(services.workspace, folder, services.plugins)
    done = services.exports.get(trained_run.project_id, record.id)
    assert done.status == "completed", done.error
    bundle = services.exports.download(trained_run.project_id, record.id, bundle=True).path
    return Exported(trained_run, record.id, folder / done.file.name, bundle)


def image_paths(services: Services, run: TrainedRun, count: int = 12) -> list[Path]:
    folder = services.workspace.images_dir(run.project_id)
    return sorted(folder.iterdir())[:count]


def server_answer(services: Services, exported: Exported, paths: list[Path], **options: Any) -> dict[str, Any]:
    model = services.predictions.load(exported.run.project_id, export_id=exported.export_id, device="cpu")
    files = [(path.name, path.read_bytes()) for path in paths]
    return services.predictions.predict(exported.run.project_id, model["id"], files, PredictOptions(**options))


def assert_same_answers(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert len(ours) == len(theirs)
    for mine, server in zip(ours, theirs, strict=True):
        assert {k: v for k, v in mine.items() if k != "predictions"} == {k: v for k, v in server.items() if k != "predictions"}
        assert [p["class_id"] for p in mine["predictions"]] == [p["class_id"] for p in server["predictions"]]
        assert [p["class_name"] for p in mine["predictions"]] == [p["class_name"] for p in server["predictions"]]
        for a, b in zip(mine["predictions"], server["predictions"], strict=True):
            assert abs(a["confidence"] - b["confidence"]) < 1e-5


def test_a_bundle_zip_answers_as_the_servers_export_model(services, exported) -> None:
    paths = image_paths(services, exported.run)
    model = load(exported.bundle)
    assert isinstance(model, BundleModel)
    assert model.task == "classification" and model.classes == ["circle", "square", "triangle"]
    assert model.input_size == (16, 16) and model.channels == 3 and model.format == "onnx"
    assert model.runtime == "onnxruntime" and model.device == "cpu"
    ours = model.predict(paths, top_k=3)
    theirs = server_answer(services, exported, paths, top_k=3)["results"]
    assert_same_answers(ours, theirs)
    assert all(len(item["predictions"]) == 3 for item in ours)
    assert "onnxruntime" in repr(model)


def test_the_unzipped_folder_and_the_bare_onnx_file_answer_the_same(services, exported, tmp_path: Path) -> None:
    paths = image_paths(services, exported.run, 6)
    with zipfile.ZipFile(exported.bundle) as archive:
        archive.extractall(tmp_path / "bundle")
    expected = load(exported.bundle).predict(paths, top_k=2)
    from_folder = load(tmp_path / "bundle")
    bare = load(exported.model)
    assert bare.classes == from_folder.classes == ["circle", "square", "triangle"]
    assert bare.task == "classification" and bare.input_size == (16, 16)
    assert_same_answers(from_folder.predict(paths, top_k=2), expected)
    assert_same_answers(bare.predict(paths, top_k=2), expected)


def test_bytes_pil_images_and_one_image_are_taken_and_a_bad_image_gets_an_error_item(services, exported) -> None:
    model = load(exported.bundle)
    path = image_paths(services, exported.run, 1)[0]
    reference = model.predict(path)
    assert len(reference) == 1 and reference[0]["filename"] == path.name
    assert len(reference[0]["predictions"]) == 3  # top_k 5 by default, capped at the class count
    from_bytes = model.predict([path.read_bytes(), b"not an image"], top_k=1)
    assert from_bytes[0]["filename"] == "image-0"
    assert from_bytes[0]["predictions"][0]["class_id"] == reference[0]["predictions"][0]["class_id"]
    assert from_bytes[1] == {"filename": "image-1", "error": {"code": "INVALID_IMAGE",
                                                              "message": from_bytes[1]["error"]["message"]}}
    with Image.open(path) as image:
        image.load()
        if path.suffix.lower() == ".png":  # lossless: the same pixels as the file
            assert model.predict(image, top_k=1)[0]["predictions"] == model.predict(path, top_k=1)[0]["predictions"]
        assert model.predict([image.convert("RGB")], top_k=1)[0]["predictions"][0]["class_name"] in model.classes


def test_bad_options_and_inputs_are_refused_clearly(exported) -> None:
    from modelyard.core.errors import ValidationError

    model = load(exported.bundle)
    with pytest.raises(ValidationError, match="top_k"):
        model.predict(b"", top_k=0)
    with pytest.raises(TypeError, match="path, bytes or a PIL image"):
        model.predict([42])
    with pytest.raises(ValueError, match="device"):
        load(exported.bundle, device="tpu")


def test_loading_a_zip_writes_nothing_but_a_temporary_folder_it_removes(exported, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    beside = sorted(exported.bundle.parent.iterdir())
    model = load(exported.bundle)
    assert model.predict(b"junk")[0]["error"]["code"] == "INVALID_IMAGE"
    assert list(scratch.iterdir()) == []
    assert sorted(exported.bundle.parent.iterdir()) == beside


def test_the_bundles_preprocessing_says_the_task_and_its_export_facts(exported) -> None:
    with zipfile.ZipFile(exported.bundle) as archive:
        prep = json.loads(archive.read("preprocessing.json"))
    assert prep["task"] == "classification" and "score_threshold" not in prep
    detection = DeploymentMetadata(classes=["a"], input_size=[64, 64], channels=3, mean=[0.5] * 3, std=[0.5] * 3,
                                   architecture="simple_detector", run_id="run-1", experiment_id="exp-1",
                                   checkpoint="best", task="object_detection", export={"score_threshold": 0.3})
    document = preprocessing_document(detection)
    assert document["task"] == "object_detection" and document["score_threshold"] == 0.3


# -- hostile and broken bundles ----------------------------------------------------------------


def rezip(source: Path, target: Path, drop: tuple[str, ...] = (), replace: dict[str, bytes] | None = None,
          extra: dict[str, bytes] | None = None) -> Path:
    """A copy of the bundle with members dropped, replaced or added (names written as given)."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist() if name not in drop}
    members.update(replace or {})
    members.update(extra or {})
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return target


def model_name(bundle: Path) -> str:
    with zipfile.ZipFile(bundle) as archive:
        return next(name for name in archive.namelist() if name.endswith(".onnx"))


@pytest.mark.parametrize(("change", "needle"), [
    ({"extra": {"../evil.txt": b"x"}}, "unsafe member name"),
    ({"extra": {"/etc/evil": b"x"}}, "unsafe member name"),
    ({"extra": {"sub\\..\\..\\evil": b"x"}}, "unsafe member name"),
    ({"drop": ("labels.json",)}, "no labels.json"),
    ({"drop": ("preprocessing.json",)}, "no preprocessing.json"),
    ({"drop": ("MODEL",)}, "no model file"),
    ({"extra": {"second.onnx": b"x"}}, "2 model files"),
    ({"replace": {"MODEL": b"\x00garbage, not a protobuf" * 40}}, "MODEL"),
    ({"replace": {"labels.json": b"{not json"}}, "labels.json is not valid JSON"),
    ({"replace": {"labels.json": b"{\"a\": 1}"}}, "non-empty list of strings"),
    ({"replace": {"preprocessing.json": b"[]"}}, "not a JSON object"),
    ({"replace": {"preprocessing.json": json.dumps({"task": "classification", "input_size": [0, 16], "channels": 3,
                                                     "mean": [0, 0, 0], "std": [1, 1, 1]}).encode()}}, "input_size"),
    ({"replace": {"preprocessing.json": json.dumps({"task": "no_such_task", "input_size": [16, 16], "channels": 3,
                                                     "mean": [0, 0, 0], "std": [1, 1, 1]}).encode()}}, "no_such_task"),
], ids=["zip-slip", "absolute", "backslashes", "no-labels", "no-preprocessing", "no-model", "two-models",
        "garbage-model", "labels-not-json", "labels-not-a-list", "preprocessing-not-an-object", "bad-input-size",
        "unknown-task"])
def test_hostile_or_broken_bundles_raise_a_clear_bundle_error(exported, tmp_path: Path, change: dict[str, Any],
                                                             needle: str) -> None:
    name = model_name(exported.bundle)
    drop = tuple(name if m == "MODEL" else m for m in change.get("drop", ()))
    replace = {name if m == "MODEL" else m: v for m, v in change.get("replace", {}).items()}
    bad = rezip(exported.bundle, tmp_path / "bad-bundle.zip", drop, replace, change.get("extra"))
    with pytest.raises(BundleError, match=needle.replace("MODEL", name).replace("(", r"\(")) as raised:
        load(bad)
    assert isinstance(raised.value, ValueError) and str(bad) in str(raised.value)
    assert not (tmp_path / "evil.txt").exists() and not Path("/etc/evil").exists()


def test_a_zip_bomb_member_is_refused_from_its_declared_size(exported, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import modelyard.predict as entry

    monkeypatch.setattr(entry, "MAX_JSON_BYTES", 1024)
    bomb = rezip(exported.bundle, tmp_path / "bomb.zip", replace={"labels.json": b"[" + b" " * 100_000 + b"]"})
    with pytest.raises(BundleError, match="unpacks to 100002 bytes"):
        load(bomb)


def test_files_that_are_not_bundles_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match="neither a bundle ZIP nor a model file"):
        load(tmp_path / "notes.txt")
    with pytest.raises(BundleError, match="does not exist"):
        load(tmp_path / "missing.zip")
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(BundleError, match="broken.onnx"):
        load(tmp_path / "broken.onnx")
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(BundleError, match="bare model file must carry"):
        load(tmp_path / "model.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no model file"):
        load(tmp_path / "empty")


def test_an_older_bundle_without_a_task_reads_it_from_the_onnx_metadata(exported, tmp_path: Path) -> None:
    with zipfile.ZipFile(exported.bundle) as archive:
        prep = json.loads(archive.read("preprocessing.json"))
    prep.pop("task")
    old = rezip(exported.bundle, tmp_path / "old-bundle.zip", replace={"preprocessing.json": json.dumps(prep).encode()})
    model = load(old)
    assert model.task == "classification" and model.metadata.architecture == "simple_cnn"


def test_a_png_made_in_memory_is_answered(exported) -> None:
    buffer = io.BytesIO()
    Image.new("L", (40, 30), 200).save(buffer, format="PNG")
    (item,) = load(exported.bundle).predict(buffer.getvalue(), top_k=1)
    assert item["width"] == 40 and item["height"] == 30 and len(item["predictions"]) == 1


# -- object detection: the task seam -------------------------------------------------------------

DETECTION_THRESHOLD = 0.2  # a detector trained for seconds scores its boxes low (tests/core/prediction/test_detection.py)


def detection_bundle(services: Services, run: TrainedRun, fmt: str) -> tuple[str, Path]:
    record = services.exports.create(run.project_id, experiment_id=run.experiment_id, run_id=run.run_id, format=fmt,
                                     options={"score_threshold": DETECTION_THRESHOLD})
    export_or_follow(services.workspace, services.workspace.exports_dir(run.project_id) / record.id, services.plugins)
    assert services.exports.get(run.project_id, record.id).status == "completed"
    return record.id, services.exports.download(run.project_id, record.id, bundle=True).path


def val_paths(services: Services, run: TrainedRun) -> list[Path]:
    dataset = json.loads(services.workspace.dataset_json(run.project_id).read_text(encoding="utf-8"))
    names = [image["filename"] for image in dataset["images"] if image["split"][0] == "val"][:8]
    return [services.workspace.images_dir(run.project_id) / name for name in names]


def assert_same_boxes(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert len(ours) == len(theirs) and sum(len(item["predictions"]) for item in theirs) > 0
    for mine, server in zip(ours, theirs, strict=True):
        assert (mine["filename"], mine["width"], mine["height"]) == (server["filename"], server["width"], server["height"])
        assert [p["class_id"] for p in mine["predictions"]] == [p["class_id"] for p in server["predictions"]]
        for a, b in zip(mine["predictions"], server["predictions"], strict=True):
            assert abs(a["score"] - b["score"]) < 1e-5 and a["bbox"] == pytest.approx(b["bbox"], abs=0.02)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_detection_bundle_answers_with_the_servers_boxes(services, detection_run) -> None:
    export_id, bundle = detection_bundle(services, detection_run, "onnx")
    paths = val_paths(services, detection_run)
    model = load(bundle)
    assert model.task == "object_detection" and model.facts == {"score_threshold": DETECTION_THRESHOLD}
    served = services.predictions.load(detection_run.project_id, export_id=export_id, device="cpu")
    files = [(p.name, p.read_bytes()) for p in paths]
    theirs = services.predictions.predict(detection_run.project_id, served["id"], files,
                                          PredictOptions(score_threshold=DETECTION_THRESHOLD))["results"]
    assert_same_boxes(model.predict(paths, score_threshold=DETECTION_THRESHOLD), theirs)
    with zipfile.ZipFile(bundle) as archive:
        bare = bundle.parent / next(n for n in archive.namelist() if n.endswith(".onnx"))
    from_file = load(bare)  # the task and its threshold from the file's metadata_props
    assert from_file.task == "object_detection" and from_file.facts == {"score_threshold": DETECTION_THRESHOLD}
    assert_same_boxes(from_file.predict(paths, score_threshold=DETECTION_THRESHOLD), theirs)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_torchscript_bundle_says_its_task_in_preprocessing_json(services, detection_run) -> None:
    export_id, bundle = detection_bundle(services, detection_run, "torchscript")
    model = load(bundle)
    assert model.task == "object_detection" and model.format == "torchscript" and model.runtime == "torchscript"
    paths = val_paths(services, detection_run)
    served = services.predictions.load(detection_run.project_id, export_id=export_id, device="cpu")
    files = [(p.name, p.read_bytes()) for p in paths]
    theirs = services.predictions.predict(detection_run.project_id, served["id"], files,
                                          PredictOptions(score_threshold=DETECTION_THRESHOLD))["results"]
    assert_same_boxes(model.predict(paths, score_threshold=DETECTION_THRESHOLD), theirs)
