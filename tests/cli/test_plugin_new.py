"""``modelyard plugin new NAME``: a ready plugin package that installs and passes its own tests as written."""

from __future__ import annotations

import ast
import sys
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelyard.cli import main as cli_main
from modelyard.cli.plugin import TEMPLATE_FILES
from modelyard.core import HOOK_API_VERSION
from modelyard.core.plugin_manager import ENTRY_POINT_GROUP, PluginHost
from tests.helpers.plugin_package import install, run_pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO / "cli" / "plugin_template"
EXPECTED_FILES = {"pyproject.toml", "README.md", ".gitignore", "src/modelyard_acme/__init__.py",
                  "src/modelyard_acme/plugin.py", "tests/test_plugin.py"}


def _new(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli_main, ["plugin", "new", *args])
    return result.exit_code, result.stdout, result.stderr


def _files(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    code, out, err = _new("acme", "--dir", str(tmp_path))
    assert code == 0, err
    assert out.startswith(f"Created {tmp_path / 'modelyard-acme'}: plugin acme (package modelyard_acme, hook API {HOOK_API_VERSION})")
    return tmp_path / "modelyard-acme"


@pytest.fixture
def forget_acme() -> Iterator[None]:
    yield
    for module in [m for m in sys.modules if m.split(".")[0] == "modelyard_acme"]:
        sys.modules.pop(module, None)


def test_plugin_new_writes_the_package_with_the_entry_point_and_the_hook_api(generated: Path) -> None:
    assert _files(generated) == EXPECTED_FILES
    project = tomllib.loads((generated / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert (project["name"], project["dependencies"]) == ("modelyard-acme", ["modelyard"])
    assert project["entry-points"] == {ENTRY_POINT_GROUP: {"acme": "modelyard_acme.plugin"}}
    plugin = ast.parse((generated / "src/modelyard_acme/plugin.py").read_text(encoding="utf-8"))
    assigned = {node.targets[0].id: node.value for node in plugin.body if isinstance(node, ast.Assign)}  # type: ignore[attr-defined]
    assert ast.literal_eval(assigned["MODELYARD_HOOK_API"]) == HOOK_API_VERSION
    hooks = {node.name for node in plugin.body if isinstance(node, ast.FunctionDef) and node.decorator_list}
    assert {"register_architectures", "register_importers", "register_exporters"} <= hooks
    tests = (generated / "tests/test_plugin.py").read_text(encoding="utf-8")
    assert "from modelyard.testing import check_architecture, check_exporter, check_importer, check_installed" in tests
    readme = (generated / "README.md").read_text(encoding="utf-8")
    assert "# modelyard-acme" in readme and "pip install -e" in readme and "${" not in readme


def test_plugin_new_json_says_what_it_wrote(tmp_path: Path) -> None:
    import json

    code, out, _ = _new("acme_models", "--dir", str(tmp_path / "new" / "parent"), "--json")
    assert code == 0
    data = json.loads(out)
    assert data == {"path": str(tmp_path / "new" / "parent" / "modelyard-acme-models"), "name": "acme_models",
                    "package": "modelyard_acme_models", "distribution": "modelyard-acme-models",
                    "hook_api": HOOK_API_VERSION, "files": [f.format(package="modelyard_acme_models") for f in TEMPLATE_FILES]}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Acme", "is not a plugin name"), ("1acme", "is not a plugin name"), ("my-plugin", "is not a plugin name"),
        ("acme_", "is not a plugin name"), ("a__b", "is not a plugin name"), ("a" * 41, "is not a plugin name"),
        ("", "is not a plugin name"), ("acme/../x", "is not a plugin name"), ("class", "is a Python keyword"),
        ("simple_cnn", "is the name of a built-in plugin"), ("modelyard_acme", "leave out the 'modelyard' prefix"),
    ],
)
def test_plugin_new_refuses_names_that_cannot_be_a_plugin_and_writes_nothing(tmp_path: Path, name: str, reason: str) -> None:
    code, out, err = _new(name, "--dir", str(tmp_path))
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith(f"error: Invalid value for NAME: {name!r} {reason}".replace(f"{name!r} leave", "leave"))
    assert list(tmp_path.iterdir()) == []


def test_plugin_new_never_overwrites_an_existing_folder(tmp_path: Path) -> None:
    existing = tmp_path / "modelyard-acme"
    existing.mkdir()
    (existing / "mine.txt").write_text("keep me")
    code, _, err = _new("acme", "--dir", str(tmp_path))
    assert code == 1
    assert err == f"error: {existing} already exists; nothing was written (choose another NAME or --dir)\n"
    assert _files(existing) == {"mine.txt"} and (existing / "mine.txt").read_text() == "keep me"


def test_every_template_file_is_package_data() -> None:
    """A wheel of modelyard ships the template (pyproject's package-data), not only the source tree."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    cli_dir = Path(config["package-dir"]["modelyard.cli"])
    patterns = config["package-data"]["modelyard.cli"]
    shipped = {p.relative_to(REPO / cli_dir).as_posix() for p in TEMPLATE_DIR.iterdir() if p.is_file()}
    assert {f"plugin_template/{name}" for name in TEMPLATE_FILES.values()} == shipped
    assert [f for f in sorted(shipped) if not any(fnmatch(f, pattern) for pattern in patterns)] == []


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_generated_package_installs_passes_its_own_tests_and_loads_in_the_plugin_host(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forget_acme: None
) -> None:
    site = tmp_path / "site"
    install(generated, site)
    assert {p.name for p in site.iterdir()} >= {"modelyard_acme", "modelyard_acme-0.1.0.dist-info"}
    result = run_pytest(["-W", "error::DeprecationWarning:modelyard_acme"], cwd=generated, site=site)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1].startswith("6 passed")
    monkeypatch.syspath_prepend(str(site))
    host = PluginHost(disabled=set()).load_all()
    info = host.plugins["acme"]
    assert (info.status, info.source, info.version) == ("loaded", "modelyard-acme", "0.1.0")
    assert {key: names for key, names in info.registered.items() if names} == {
        "architectures": ["acme_net"], "importers": ["acme_txt"], "exporters": ["acme_pt2"]}
