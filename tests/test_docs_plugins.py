"""docs/plugins.md cannot rot: its testing examples run as shown, and what it points to exists.

The Python blocks of section 6 ("Testing with ``modelyard.testing``") are
written to files as they are and run with pytest against the package
``modelyard plugin new acme`` writes, installed without the network
(tests/helpers/plugin_package.py).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import modelyard.core
from modelyard.cli.plugin import write_plugin_package
from tests.helpers.plugin_package import install, run_pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _section(number: int) -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"\n## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _testing_examples() -> list[str]:
    return PYTHON_BLOCK.findall(_section(6))


def test_the_testing_section_has_its_examples() -> None:
    blocks = _testing_examples()
    assert len(blocks) == 2
    assert "check_architecture(" in blocks[0] and "TestClient(app, base_url=" in blocks[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_testing_examples_run_as_shown_against_the_generated_acme_package(tmp_path: Path) -> None:
    package, _files = write_plugin_package("acme", tmp_path / "src")
    site = tmp_path / "site"
    install(package, site)
    examples = tmp_path / "examples"
    examples.mkdir()
    expected = 0
    for number, block in enumerate(_testing_examples()):
        (examples / f"test_example_{number}.py").write_text(block, encoding="utf-8")
        expected += len(re.findall(r"^def test_", block, re.MULTILINE))
    (examples / "pyproject.toml").write_text("[tool.pytest.ini_options]\naddopts = '--import-mode=importlib'\n")
    result = run_pytest(["-rfE"], cwd=examples, site=site)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1].startswith(f"{expected} passed"), result.stdout


def test_the_guide_links_only_to_files_in_the_repository() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert "DESIGN" not in text  # DESIGN.md is not part of the repository
    links = [target for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text) if "://" not in target]
    assert links, "expected relative links"
    missing = [target for target in links if not (GUIDE.parent / target).exists()]
    assert not missing, f"docs/plugins.md links to missing files: {missing}"
    paths = set(re.findall(r"`((?:tests|docs|core|cli|plugins|api)/[\w./-]+)`", text))
    assert not [path for path in sorted(paths) if not (ROOT / path).exists()], "docs/plugins.md names missing files"


def test_every_modelyard_core_name_the_guide_mentions_exists() -> None:
    """Names the guide tells plugin authors to use from ``modelyard.core`` are there (``resolve_options`` included)."""
    text = GUIDE.read_text(encoding="utf-8")
    missing = []
    for dotted in sorted(set(re.findall(r"modelyard\.core(?:\.\w+)+", text))):
        parts = dotted.split(".")
        target: object = modelyard.core
        for depth, part in enumerate(parts[2:], start=3):
            if hasattr(target, part):
                target = getattr(target, part)
                continue
            try:
                target = importlib.import_module(".".join(parts[:depth]))
            except ImportError:
                missing.append(dotted)
                break
    assert not missing, f"docs/plugins.md names what modelyard.core does not have: {missing}"
    assert {"resolve_options", "HOOK_API_VERSION", "hookimpl"} <= set(modelyard.core.__all__)
