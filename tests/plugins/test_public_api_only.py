"""Built-in plugins use only the public plugin API (``modelyard.core`` itself), like a third-party plugin must."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import modelyard.core

PLUGINS_DIR = Path(__file__).parents[2] / "plugins"
#: a plugin's own modules: a single file, or every module of a plugin package (which may import its siblings)
PLUGIN_MODULES = sorted([p for p in PLUGINS_DIR.glob("*.py") if p.name != "__init__.py"] + list(PLUGINS_DIR.glob("*/*.py")))
#: Classification's metrics, results table and label reader are core's, from before tasks were plugins; the
#: core evaluation index and the API still share them. Every other plugin module uses the public API only.
CORE_MODULES_OF_CLASSIFICATION = {"modelyard.core.datasets.document", "modelyard.core.evaluation.metrics",
                                  "modelyard.core.evaluation.results"}


def _modelyard_imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import of a ``modelyard`` module in ``path``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and (node.module.startswith("modelyard") or node.level):
            found.append((("." * node.level) + node.module if node.level else node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("modelyard")]
    return found


def test_there_are_built_in_plugins_to_check() -> None:
    assert {"onnx_exporter.py", "torchvision_models.py", "imagefolder.py"} <= {p.name for p in PLUGIN_MODULES}


@pytest.mark.parametrize("path", PLUGIN_MODULES, ids=lambda p: p.name)
def test_a_built_in_plugin_imports_only_modelyard_core_and_its_public_names(path: Path) -> None:
    in_package = path.parent != PLUGINS_DIR
    for module, names in _modelyard_imports(path):
        if in_package and module.startswith(".") and not module.startswith(".."):
            continue  # a sibling module of the same plugin package
        if path.parent.name == "classification" and module in CORE_MODULES_OF_CLASSIFICATION:
            continue
        assert module == "modelyard.core", f"{path.name} reaches into {module} (import from modelyard.core instead)"
        missing = set(names) - set(modelyard.core.__all__)
        assert not missing, f"{path.name} imports {missing}, which modelyard.core does not export"
