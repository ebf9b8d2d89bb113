"""The scripting CLI: every command with ``--json``, and clear non-zero exits on bad input.

Commands run in-process through click's runner against a real temp
workspace (``--workspace``), with the same services the API uses; a domain
error must print ``error: ...`` on stderr and exit 1, a usage error exit 2,
and never show a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import onnxruntime
import pytest
from click.testing import CliRunner, Result

from modelyard.cli import main
from modelyard.core.sample_data import generate_shapes
from modelyard.core.services import Services
from tests.conftest import TrainedRun


@pytest.fixture
def ws(services: Services) -> str:
    return str(services.workspace.root)


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:  # noqa: A002
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_fails(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert result.stderr.startswith("error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    folder = tmp_path / "mine" / "shapes"  # not an import root: the CLI imports with the user's own rights
    generate_shapes(folder, per_class=3, size=16, seed=2)
    return folder


# -- projects ------------------------------------------------------------------------------


def test_projects_create_list_and_delete(ws: str) -> None:
    created = ok_json(cli("projects", "create", "Shapes", "--description", "toy", "--workspace", ws, "--json"))
    assert created["name"] == "Shapes" and created["id"].startswith("proj-")
    listed = ok_json(cli("projects", "list", "--workspace", ws, "--json"))
    assert [p["id"] for p in listed] == [created["id"]]
    human = cli("projects", "list", "--workspace", ws)
    assert created["id"] in human.stdout and "Shapes" in human.stdout
    refused = cli("projects", "delete", created["id"], "--workspace", ws, input="n\n")
    assert refused.exit_code == 1 and ok_json(cli("projects", "list", "--workspace", ws, "--json"))
    deleted = ok_json(cli("projects", "delete", "Shapes", "--yes", "--workspace", ws, "--json"))
    assert deleted == {"id": created["id"], "deleted": True}
    assert ok_json(cli("projects", "list", "--workspace", ws, "--json")) == []


def test_commands_that_need_no_plugin_start_without_importing_torch(tmp_path: Path) -> None:
    code = ("import sys; from modelyard.cli import main\n"
            "try:\n    main(['projects', 'list', '--workspace', sys.argv[1], '--json'])\n"
            "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ws")], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr

def test_the_workspace_comes_from_the_environment_when_not_given(tmp_path: Path) -> None:
    env_ws = tmp_path / "from-env"
    ok_json(cli("projects", "create", "Env", "--json", env={"MODELYARD_WORKSPACE": str(env_ws)}))
    assert len(list((env_ws / "projects").iterdir())) == 1


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("projects", "create", "a/b"), ("name",)),
        (("projects", "delete", "proj-00000000", "--yes"), ("Project proj-00000000 not found",)),
        (("projects", "delete", "../../etc", "--yes"), ("not found",)),
        (("dataset", "info", "No such project"), ("not found",)),
    ],
    ids=["bad-name", "unknown-id", "path-like-id", "unknown-name"],
)
def test_domain_errors_exit_1_with_a_clear_message(ws: str, args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    assert_fails(cli(*args, "--workspace", ws), 1, *needles)


def test_usage_errors_exit_2() -> None:
    assert cli("no-such-command").exit_code == 2
    assert cli("projects", "create").exit_code == 2
    assert cli("split", "create", "P", "--name", "s").exit_code == 2  # --train is required


@pytest.mark.parametrize("args", [("no-such-command",), ("projects", "create"), ("train",),
                                  ("export", "P", "--run", "run-00000000", "--option", "no-equals-sign")])
def test_usage_errors_print_error_the_same_way_as_domain_errors(args: tuple[str, ...]) -> None:
    result = cli(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith("error: "), result.stderr
    assert "Error:" not in result.stderr  # not click's own format beside ours


def test_train_takes_the_project_by_name_and_refuses_a_project_without_data(ws: str) -> None:
    cli("projects", "create", "My shapes", "--workspace", ws)
    config = Path(__file__).parents[2] / "configs" / "cpu-quick.yaml"
    assert_fails(cli("train", str(config), "--project", "My shapes", "--workspace", ws), 1,
                 "The project has no dataset yet")
    assert_fails(cli("train", str(config), "--project", "Not mine", "--workspace", ws), 1, "not found")
    assert not list(Path(ws).glob("projects/*/experiments/*/runs/*"))  # no run that could only fail


# -- datasets and splits ------------------------------------------------------------------------


def test_dataset_import_from_any_folder_then_info(ws: str, shapes: Path) -> None:
    project = ok_json(cli("projects", "create", "Shapes", "--workspace", ws, "--json"))["id"]
    summary = ok_json(cli("dataset", "import", "Shapes", str(shapes), "--workspace", ws, "--json"))
    assert summary["imported"] == 12 and summary["format"] == "imagefolder"
    assert summary["classes"] == ["circle", "square", "star", "triangle"]
    info = ok_json(cli("dataset", "info", project, "--workspace", ws, "--json"))
    assert info["num_images"] == 12 and info["class_counts"] == dict.fromkeys(summary["classes"], 3)
    again = ok_json(cli("dataset", "import", project, str(shapes), "--workspace", ws, "--json"))
    assert again["imported"] == 0 and len(again["duplicates"]) == 12  # a second import merges
    assert "12 image(s), 4 class(es)" in cli("dataset", "info", project, "--workspace", ws).stdout


def test_dataset_import_of_a_zip_and_with_replace(ws: str, shapes: Path, tmp_path: Path) -> None:
    project = ok_json(cli("projects", "create", "Shapes", "--workspace", ws, "--json"))["id"]
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(shapes.glob("circle/*.png"))[:2]:
            zf.write(path, path.relative_to(shapes).as_posix())
    ok_json(cli("dataset", "import", project, str(shapes), "--workspace", ws, "--json"))
    replaced = ok_json(cli("dataset", "import", project, str(archive), "--replace", "--workspace", ws, "--json"))
    assert replaced["imported"] == 2
    assert ok_json(cli("dataset", "info", project, "--workspace", ws, "--json"))["num_images"] == 2


def test_dataset_import_refuses_hostile_and_wrong_sources(ws: str, shapes: Path, tmp_path: Path) -> None:
    project = ok_json(cli("projects", "create", "Shapes", "--workspace", ws, "--json"))["id"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("circle/ok.png", (shapes / "circle" / "circle_0000.png").read_bytes())
        zf.writestr("../../outside.png", b"x")
        zf.writestr("/abs.png", b"x")
    assert_fails(cli("dataset", "import", project, str(evil), "--workspace", ws), 1, "Refused ZIP entry")
    assert not (tmp_path / "outside.png").exists() and not Path("/abs.png").exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("hello", encoding="utf-8")
    assert_fails(cli("dataset", "import", project, str(notes), "--workspace", ws), 2)
    assert_fails(cli("dataset", "import", project, str(tmp_path / "missing"), "--workspace", ws), 2)
    assert_fails(cli("dataset", "import", project, str(shapes), "--format", "csv", "--workspace", ws), 1)
    assert_fails(cli("dataset", "import", project, str(shapes), "--format", "nope", "--workspace", ws), 1, "nope")
    assert ok_json(cli("dataset", "info", project, "--workspace", ws, "--json"))["num_images"] == 0
    assert {p.name for p in Path(ws).iterdir()} <= {".locks", ".staging", "projects"}
    assert not list(Path(ws).rglob("outside.png")) and not list(Path(ws).rglob("abs.png"))


def test_split_create_and_list(ws: str, shapes: Path) -> None:
    project = ok_json(cli("projects", "create", "Shapes", "--workspace", ws, "--json"))["id"]
    ok_json(cli("dataset", "import", project, str(shapes), "--workspace", ws, "--json"))
    made = ok_json(cli("split", "create", project, "--name", "60-20-20", "--train", "0.6", "--val", "0.2",
                       "--test", "0.2", "--seed", "3", "--workspace", ws, "--json"))
    # 3 images per class: 1.8 / 0.6 / 0.6 rounds to 2 train, 1 val, 0 test (largest remainder, ties to the earlier)
    assert made["split_index"] == 0 and made["stats"] == {"train": 8, "val": 4, "test": 0, "none": 0}
    listed = ok_json(cli("split", "list", project, "--workspace", ws, "--json"))
    assert [(s["split_index"], s["name"]) for s in listed] == [(0, "60-20-20")]
    assert listed[0]["stats"] == made["stats"]
    unstratified = ok_json(cli("split", "create", project, "--name", "all-train", "--train", "1", "--no-stratified",
                               "--workspace", ws, "--json"))
    assert unstratified["stats"]["train"] == 12
    assert_fails(cli("split", "create", project, "--name", "60-20-20", "--train", "0.5", "--workspace", ws), 1,
                 "already exists")
    assert_fails(cli("split", "create", project, "--name", "x", "--train", "0.9", "--val", "0.5", "--workspace", ws),
                 1, "ratios")


# -- evaluate and export ------------------------------------------------------------------------


def test_evaluate_runs_in_the_foreground_and_reports_metrics(ws: str, trained_run: TrainedRun) -> None:
    record = ok_json(cli("evaluate", trained_run.project_id, "--run", trained_run.run_id, "--subset", "test",
                         "--subset", "val", "--workspace", ws, "--json"))
    assert record["status"] == "completed" and record["split_subset"] == ["test", "val"]
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0 and record["num_images"] == 12
    human = cli("evaluate", trained_run.project_id, "--run", trained_run.run_id, "--workspace", ws)
    assert human.exit_code == 0 and "accuracy" in human.stdout and "SUPPORT" in human.stdout


def test_evaluate_refuses_unknown_runs_and_checkpoints(ws: str, trained_run: TrainedRun) -> None:
    assert_fails(cli("evaluate", trained_run.project_id, "--run", "run-00000000", "--workspace", ws), 1, "not found")
    assert_fails(cli("evaluate", trained_run.project_id, "--run", "../../x", "--workspace", ws), 1, "not found")
    assert_fails(cli("evaluate", trained_run.project_id, "--run", trained_run.run_id, "--split-index", "7",
                     "--workspace", ws), 1, "Split 7 not found")
    assert_fails(cli("evaluate", trained_run.project_id, "--run", trained_run.run_id, "--checkpoint", "worst",
                     "--workspace", ws), 2)


def test_export_writes_a_verified_onnx_file(ws: str, trained_run: TrainedRun) -> None:
    record = ok_json(cli("export", trained_run.project_id, "--run", trained_run.run_id, "--format", "onnx",
                         "--option", "opset_version=17", "--option", "simplify=false", "--workspace", ws, "--json"))
    assert record["status"] == "completed" and record["verification"]["passed"] is True
    assert record["options"]["opset_version"] == 17 and record["options"]["simplify"] is False
    path = Path(record["path"])
    assert path.is_file() and path.is_relative_to(Path(ws))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 16, 16]
    human = cli("export", trained_run.project_id, "--run", trained_run.run_id, "--workspace", ws)
    assert human.exit_code == 0 and "verified" in human.stdout and ".onnx" in human.stdout


@pytest.mark.parametrize(
    ("option", "code", "needle"),
    [("opset_version=3", 1, "options.opset_version"), ("no_equals_sign", 2, "key=value"),
     ("input_shape=[1, 3", 2, "not valid YAML"), ("colour=red", 1, "colour")],
    ids=["out-of-range", "malformed", "bad-yaml", "unknown-option"],
)
def test_export_refuses_bad_options(ws: str, trained_run: TrainedRun, option: str, code: int, needle: str) -> None:
    result = cli("export", trained_run.project_id, "--run", trained_run.run_id, "--option", option, "--workspace", ws)
    assert_fails(result, code)
    assert needle in result.output
    exports = trained_run.run_dir.parents[3] / "exports"
    assert not exports.exists() or list(exports.iterdir()) == []


# -- plugins, devices, sample data -------------------------------------------------------------


def test_plugins_and_devices(ws: str) -> None:
    plugins = ok_json(cli("plugins", "--json"))
    assert {"simple_cnn", "resnet18"} <= set(plugins["architectures"])
    assert {"imagefolder", "csv"} <= set(plugins["importers"]) and "onnx" in plugins["export_formats"]
    assert all(p["status"] == "loaded" for p in plugins["plugins"])
    assert "simple_cnn" in cli("plugins").stdout
    devices = ok_json(cli("devices", "--json"))
    assert devices["devices"][0]["id"] == "cpu" and devices["default_selected"]
    assert "cpu" in cli("devices").stdout


def test_sample_data_shapes_writes_a_labelled_image_folder(tmp_path: Path) -> None:
    target = tmp_path / "made"
    data = ok_json(cli("sample-data", "shapes", str(target), "--per-class", "2", "--size", "20", "--seed", "4", "--json"))
    assert data["classes"] == {"circle": 2, "square": 2, "triangle": 2, "star": 2} and data["num_images"] == 8
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.png"))[:2] == [
        "circle/circle_0000.png", "circle/circle_0001.png"]
    before = {p.name: p.read_bytes() for p in target.rglob("*.png")}
    cli("sample-data", "shapes", str(target), "--per-class", "2", "--size", "20", "--seed", "4")
    assert {p.name: p.read_bytes() for p in target.rglob("*.png")} == before  # same seed, same images
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    assert_fails(cli("sample-data", "shapes", str(a_file)), 2)
    assert_fails(cli("sample-data", "shapes", str(target), "--size", "4"), 2)


def test_sample_data_shapes_detection_writes_images_and_coco_boxes(tmp_path: Path) -> None:
    target = tmp_path / "boxes"
    data = ok_json(cli("sample-data", "shapes-detection", str(target), "--images", "6", "--size", "48", "--seed", "4",
                       "--json"))
    assert data["num_images"] == 6 and data["size"] == 48 and data["seed"] == 4 and data["path"] == str(target)
    coco = json.loads((target / "annotations.json").read_text(encoding="utf-8"))
    assert [im["file_name"] for im in coco["images"]] == [f"shapes_{i:05d}.png" for i in range(6)]
    assert len(coco["annotations"]) == data["num_boxes"] == sum(data["classes"].values()) > 0
    assert [c["name"] for c in coco["categories"]] == ["circle", "square", "triangle", "star"]
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    human = cli("sample-data", "shapes-detection", str(target), "--images", "6", "--size", "48", "--seed", "4")
    assert f"wrote 6 images with {data['num_boxes']} boxes" in human.stdout
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # same seed, same images and boxes
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    assert_fails(cli("sample-data", "shapes-detection", str(a_file)), 2)
    assert_fails(cli("sample-data", "shapes-detection", str(target), "--size", "16"), 2)
    assert_fails(cli("sample-data", "shapes-detection", str(target), "--images", "0"), 2)


def test_every_scripting_command_documents_itself_and_offers_json() -> None:
    commands = [("projects", "list"), ("projects", "create"), ("projects", "delete"), ("dataset", "import"),
                ("dataset", "info"), ("split", "create"), ("split", "list"), ("evaluate",), ("export",),
                ("plugins",), ("devices",), ("sample-data", "shapes"), ("sample-data", "shapes-detection"), ("run",)]
    for command in commands:
        result = cli(*command, "--help")
        assert result.exit_code == 0 and "--json" in result.stdout, command
        if command not in (("plugins",), ("devices",), ("sample-data", "shapes"), ("sample-data", "shapes-detection")):
            assert "--workspace" in result.stdout, command


# -- run: errors before any step ------------------------------------------------------------------


def test_run_refuses_a_broken_pipeline_file_naming_the_field(ws: str, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("project: {name: P}\ndataset: {path: data}\nsplit: {name: s, ratios: {train: 2}}\n"
                    "experiment: {name: e}\n", encoding="utf-8")
    assert_fails(cli("run", str(path), "--workspace", ws), 1, "split.ratios.train")
    path.write_text("model: {architecture: simple_cnn}\n", encoding="utf-8")
    assert_fails(cli("run", str(path), "--workspace", ws), 1, "not a pipeline file", "modelyard train")
    path.write_text("project: {name: P}\ndataset: {path: nowhere}\nsplit: {name: s, ratios: {train: 1}}\n"
                    "experiment: {name: e}\n", encoding="utf-8")
    assert_fails(cli("run", str(path), "--workspace", ws), 1, "dataset.path")
    assert not (Path(ws) / "projects").exists() or os.listdir(Path(ws) / "projects") == []
