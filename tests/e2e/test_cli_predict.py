"""``modelyard predict``: the real console script, in a subprocess, on a copy of the tiny trained run.

Its lines must be the prediction service's answers (the server's path) for
the same files; an ONNX export must agree with the checkpoint on top-1; a
broken image gets an error line while the others are answered.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelyard.cli import main
from modelyard.cli.predict import chunks, csv_bytes, image_paths, line
from modelyard.core.jobs.foreground import export_or_follow
from modelyard.core.prediction.service import PredictOptions
from modelyard.core.services import Services
from tests.conftest import TrainedRun

MODELYARD = Path(sys.executable).parent / "modelyard"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MODELYARD), "predict", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def folder(services: Services, trained_run: TrainedRun, tmp_path: Path) -> Path:
    """Six dataset images (two in a subfolder), a broken PNG, and files the walk must skip."""
    images = sorted(services.workspace.images_dir(trained_run.project_id).iterdir())[:6]
    root = tmp_path / "photos"
    (root / "more").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for index, path in enumerate(images):
        shutil.copy(path, (root / "more" if index >= 4 else root) / f"img{index}{path.suffix}")
    shutil.copy(images[0], root / ".hidden" / "skipped.png")
    shutil.copy(images[0], root / ".dotfile.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notes.txt").write_text("not an image")
    return root


def expected_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".txt"
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def service_answer(services: Services, project_id: str, paths: list[Path], top_k: int | None,
                   score_threshold: float | None = None, **source: Any) -> list[dict]:
    model = services.predictions.load(project_id, device="cpu", **source)
    files = [(p.name, p.read_bytes()) for p in paths]
    options = PredictOptions(top_k=top_k, score_threshold=score_threshold)
    return services.predictions.predict(project_id, model["id"], files, options)["results"]


def test_a_folder_gets_one_line_per_image_a_progress_bar_and_a_csv(services, trained_run, folder, tmp_path) -> None:
    ws = str(services.workspace.root)
    out = tmp_path / "answers.csv"
    result = run_cli(trained_run.project_id, str(folder), "--run", trained_run.run_id, "--checkpoint", "best",
                     "--top-k", "2", "--device", "cpu", "--csv", str(out), "--workspace", ws, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "predicting" in result.stderr and f"run {trained_run.run_id}, best checkpoint" in result.stderr
    paths = expected_paths(folder)
    assert len(paths) == 7  # six images and the broken one; hidden entries and the .txt skipped
    lines = result.stdout.splitlines()
    assert [row.split("\t")[0] for row in lines] == [str(p) for p in paths]
    classes = {"circle", "square", "triangle"}
    for path, row in zip(paths, lines, strict=True):
        answer = row.split("\t", 1)[1]
        if path.name == "broken.png":
            assert answer.startswith("error: ") and "truncated" not in answer.split(":", 1)[0]
            continue
        shown = [part.rsplit(" ", 1) for part in answer.split(", ")]
        assert len(shown) == 2 and {name for name, _ in shown} <= classes
        confidences = [float(c) for _, c in shown]
        assert confidences == sorted(confidences, reverse=True) and 0 <= confidences[1] <= confidences[0] <= 1

    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert list(rows[0]) == ["path", "rank", "class_id", "class_name", "confidence", "bbox", "error"]
    assert len(rows) == 6 * 2 + 1
    answers = service_answer(services, trained_run.project_id, paths, 2, run_id=trained_run.run_id)
    by_path = {(r["path"], r["rank"]): r for r in rows}
    for path, item in zip(paths, answers, strict=True):
        if "error" in item:
            assert by_path[(str(path), "")]["error"] == item["error"]["message"]
            continue
        for rank, p in enumerate(item["predictions"], start=1):
            row = by_path[(str(path), str(rank))]
            assert (int(row["class_id"]), row["class_name"]) == (p["class_id"], p["class_name"])
            assert abs(float(row["confidence"]) - p["confidence"]) < 1e-5 and row["bbox"] == ""
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*answers*"))


def test_json_lines_are_the_services_answers_and_the_default_model_is_the_latest_runs_best(
        services, trained_run, folder, tmp_path) -> None:
    result = run_cli(trained_run.project_id, str(folder), "--json", "--device", "cpu",
                     "--workspace", str(services.workspace.root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    items = [json.loads(row) for row in result.stdout.splitlines()]
    paths = expected_paths(folder)
    assert [item.pop("path") for item in items] == [str(p) for p in paths]
    answers = service_answer(services, trained_run.project_id, paths, 5, run_id=trained_run.run_id, checkpoint="best")
    for mine, theirs in zip(items, answers, strict=True):
        assert {k: v for k, v in mine.items() if k != "predictions"} == {k: v for k, v in theirs.items() if k != "predictions"}
        if "predictions" in theirs:
            assert [p["class_id"] for p in mine["predictions"]] == [p["class_id"] for p in theirs["predictions"]]
            for a, b in zip(mine["predictions"], theirs["predictions"], strict=True):
                assert abs(a["confidence"] - b["confidence"]) < 1e-5
    assert items[[p.name for p in paths].index("broken.png")]["error"]["code"] == "INVALID_IMAGE"


def test_an_onnx_export_agrees_with_the_checkpoint_on_top1(services, trained_run, folder, tmp_path) -> None:
    record = services.exports.create(trained_run.project_id, experiment_id=trained_run.experiment_id,
                                     run_id=trained_run.run_id, checkpoint="best", format="onnx")
    export_or_follow(services.workspace, services.workspace.exports_dir(trained_run.project_id) / record.id,
                     services.plugins)
    ws = str(services.workspace.root)
    images = [str(p) for p in expected_paths(folder) if p.name != "broken.png"]
    by_export = run_cli(trained_run.project_id, *images, "--export", record.id, "--json", "--workspace", ws, cwd=tmp_path)
    assert by_export.returncode == 0, by_export.stderr
    exported = [json.loads(row) for row in by_export.stdout.splitlines()]
    checkpoint = service_answer(services, trained_run.project_id, [Path(p) for p in images], 1, run_id=trained_run.run_id)
    assert [e["path"] for e in exported] == images
    assert [e["predictions"][0]["class_id"] for e in exported] == [c["predictions"][0]["class_id"] for c in checkpoint]


def test_only_broken_images_exit_1_after_their_error_lines(services, trained_run, tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "b.jpg").write_bytes(b"")
    result = run_cli(trained_run.project_id, str(tmp_path / "a.png"), str(tmp_path / "b.jpg"), "--run",
                     trained_run.run_id, "--device", "cpu", "--workspace", str(services.workspace.root), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [row.split("\t")[1].startswith("error: ") for row in result.stdout.splitlines()] == [True, True]
    assert result.stderr.splitlines()[-1] == "error: none of the 2 image(s) could be predicted"


# -- command-line errors (in-process: no model is ever loaded) ------------------------------------


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["predict", *args], catch_exceptions=False)


@pytest.mark.parametrize(("extra", "needle"), [
    (("--run", "run-00000000", "--export", "export-00000000"), "either --run or --export"),
    (("--export", "export-00000000", "--checkpoint", "last"), "--checkpoint goes with --run"),
    (("--top-k", "0"), "--top-k"),
    (("--score-threshold", "1.5"), "--score-threshold"),
])
def test_usage_errors_exit_2(services, tmp_path, extra: tuple[str, ...], needle: str) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(b"x")
    result = cli("P", str(image), *extra, "--workspace", str(services.workspace.root))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith("error: ") and needle in result.stderr, result.stderr


def test_a_missing_path_or_no_image_is_an_error(services, tmp_path) -> None:
    ws = str(services.workspace.root)
    missing = cli("P", str(tmp_path / "nope.jpg"), "--workspace", ws)
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = cli("P", str(tmp_path / "empty"), "--workspace", ws)
    assert empty.exit_code == 1 and empty.stderr.startswith("error: no image files in")


@pytest.mark.parametrize(("model", "needle"), [
    (("--run", "run-00000000"), "run-00000000"),
    (("--export", "export-00000000"), "export-00000000"),
    ((), "no completed run"),
], ids=["unknown-run", "unknown-export", "no-run-yet"])
def test_unknown_models_and_projects_exit_1_with_a_clear_message(services, trained_run, tmp_path,
                                                                 model: tuple[str, ...], needle: str) -> None:
    ws = str(services.workspace.root)
    image = next(services.workspace.images_dir(trained_run.project_id).iterdir())
    project = trained_run.project_id
    if not model:  # a project with data but no run
        project = services.projects.create("Empty").id
    result = cli(project, str(image), *model, "--workspace", ws)
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and needle in result.stderr, result.stderr
    unknown = cli("No such project", str(image), "--workspace", ws)
    assert unknown.exit_code == 1 and "not found" in unknown.stderr


def test_help_documents_the_default_model_and_offers_json_and_workspace() -> None:
    result = CliRunner().invoke(main, ["predict", "--help"])
    assert result.exit_code == 0
    for needle in ("--json", "--workspace", "--csv", "--export", "latest completed run", "IMAGE_OR_FOLDER"):
        assert needle in result.stdout, needle


# -- the pieces -------------------------------------------------------------------------------


def test_lines_for_classes_boxes_errors_and_other_answers() -> None:
    path = Path("a/b.jpg")
    classes = {"predictions": [{"class_id": 1, "class_name": "cat", "confidence": 0.91234},
                               {"class_id": 0, "class_name": "dog", "confidence": 0.05}]}
    assert line(path, classes) == "a/b.jpg\tcat 0.9123, dog 0.0500"
    boxes = {"predictions": [{"class_id": 0, "class_name": "square", "score": 0.8, "bbox": [1.5, 2.0, 10.0, 12.25]},
                             {"class_id": 1, "class_name": "circle", "score": 0.6, "bbox": [0, 0, 3, 4]}]}
    assert line(path, boxes, boxes=True) == "a/b.jpg\t2 boxes: square 0.8000 [1.5,2,10,12.25]; circle 0.6000 [0,0,3,4]"
    assert line(path, {"predictions": []}, boxes=True) == "a/b.jpg\t0 boxes"
    assert line(path, {"predictions": boxes["predictions"][:1]}) == "a/b.jpg\t1 box: square 0.8000 [1.5,2,10,12.25]"
    assert line(path, {"error": {"code": "INVALID_IMAGE", "message": "empty file"}}) == "a/b.jpg\terror: empty file"
    assert line(path, {"predictions": [{"value": 3.5}]}) == 'a/b.jpg\t[{"value": 3.5}]'


def test_the_csv_has_a_row_per_prediction_and_one_for_an_image_without_any() -> None:
    data = csv_bytes([
        (Path("x.jpg"), {"predictions": [{"class_id": 0, "class_name": "a", "score": 0.5, "bbox": [1, 2, 3, 4]}]}),
        (Path("y.jpg"), {"predictions": []}),
        (Path("z.jpg"), {"error": {"code": "INVALID_IMAGE", "message": "empty file"}}),
    ]).decode()
    assert data.splitlines() == ["path,rank,class_id,class_name,confidence,bbox,error",
                                 'x.jpg,1,0,a,0.5,"[1, 2, 3, 4]",', "y.jpg,,,,,,", "z.jpg,,,,,,empty file"]


def test_the_walk_is_sorted_recursive_and_chunks_respect_both_limits(tmp_path) -> None:
    for name in ("b/2.PNG", "a.jpg", "b/1.webp", "c.txt", ".git/x.png", "b/.y.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"1234")
    lone = tmp_path / "c.txt"
    found = list(image_paths([lone, tmp_path]))
    assert found == [lone, tmp_path / "a.jpg", tmp_path / "b/1.webp", tmp_path / "b/2.PNG"]
    assert [len(c) for c in chunks(found, max_files=3, max_bytes=1000)] == [3, 1]
    assert [len(c) for c in chunks(found, max_files=64, max_bytes=8)] == [2, 2]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_a_detection_run_prints_boxes_in_the_images_pixels(services, detection_run, tmp_path) -> None:
    dataset = json.loads(services.workspace.dataset_json(detection_run.project_id).read_text(encoding="utf-8"))
    names = [image["filename"] for image in dataset["images"] if image["split"][0] == "val"][:4]
    images = [str(services.workspace.images_dir(detection_run.project_id) / name) for name in names]
    result = run_cli(detection_run.project_id, *images, "--run", detection_run.run_id, "--score-threshold", "0.2",
                     "--device", "cpu", "--workspace", str(services.workspace.root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answers = service_answer(services, detection_run.project_id, [Path(p) for p in images], None, 0.2,
                             run_id=detection_run.run_id)
    assert sum(len(a["predictions"]) for a in answers) > 0
    for path, row, answer in zip(images, result.stdout.splitlines(), answers, strict=True):
        count = len(answer["predictions"])
        assert row.startswith(f"{path}\t{count} box" + ("" if count == 1 else "es"))
        for p in answer["predictions"]:
            assert f"{p['class_name']} {p['score']:.4f} [" in row
