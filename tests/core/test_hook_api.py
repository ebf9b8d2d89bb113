"""The hook API cannot drift: every hook in core/hookspecs.py is documented, versioned and exercised.

Generic over the hookspecs module, so a hook added later is checked the moment
it exists: its docstring says ``Added in X.Y.`` (never newer than
``modelyard.core.HOOK_API_VERSION``) and documents each argument, section 1 of
docs/plugins.md lists it with the same version, and some plugin under tests/
implements it with ``@hookimpl`` (so a test loads it and calls it).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from modelyard.core import HOOK_API_VERSION, hookspecs
from modelyard.core.plugin_manager import parse_hook_api

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "plugins.md"
ADDED_IN = re.compile(r"^\s*Added in (\S+?)\.?\s*$", re.MULTILINE)


def _decorated_with(node: ast.FunctionDef, marker: str) -> bool:
    """``@marker`` or ``@something.marker``, with or without a call (``@hookimpl(tryfirst=True)``)."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if getattr(target, "id", None) == marker or getattr(target, "attr", None) == marker:
            return True
    return False


def _hookspecs() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(Path(hookspecs.__file__).read_text(encoding="utf-8"))
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef) and _decorated_with(node, "hookspec")}


HOOKS = sorted(_hookspecs())


def _added_in(hook: str) -> str:
    found = ADDED_IN.findall(ast.get_docstring(_hookspecs()[hook]) or "")
    assert len(found) == 1, f"{hook}: its docstring must end with one 'Added in X.Y.' line, found {found}"
    return str(found[0])


def _guide_section(number: int) -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"\n## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


@cache
def _test_hookimpls() -> dict[str, list[str]]:
    """Hook name -> files under tests/ (test modules and fixture plugins) with an ``@hookimpl`` of that name."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and _decorated_with(node, "hookimpl"):
                found.setdefault(node.name, []).append(str(path.relative_to(REPO)))
    return found


def test_the_hookspecs_are_found() -> None:
    assert {"register_tasks", "register_architectures", "register_importers", "register_exporters"} <= set(HOOKS)


def test_hook_api_version_is_major_minor() -> None:
    assert parse_hook_api(HOOK_API_VERSION)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_says_when_it_was_added_no_later_than_the_hook_api_version(hook: str) -> None:
    added = _added_in(hook)
    assert parse_hook_api(added) <= parse_hook_api(HOOK_API_VERSION), (
        f"{hook} was added in {added}, newer than HOOK_API_VERSION {HOOK_API_VERSION}: raise HOOK_API_VERSION"
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_documents_each_argument(hook: str) -> None:
    spec = _hookspecs()[hook]
    docstring = ast.get_docstring(spec) or ""
    missing = [arg.arg for arg in spec.args.args if f":param {arg.arg}:" not in docstring]
    assert not missing, f"{hook}: no ':param name:' line for {missing}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_listed_in_section_1_of_the_plugin_guide_with_its_version(hook: str) -> None:
    rows = [line for line in _guide_section(1).splitlines() if line.startswith(f"| `{hook}(")]
    assert rows, f"docs/plugins.md section 1 has no table row for `{hook}(...)`"
    since = rows[0].rstrip(" |").rsplit("|", 1)[-1].strip()
    assert since == _added_in(hook), f"docs/plugins.md says {hook} is since {since}, its docstring {_added_in(hook)}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_by_a_plugin_under_tests(hook: str) -> None:
    assert _test_hookimpls().get(hook), f"no @hookimpl def {hook}(...) in tests/: no test exercises the hook"


def test_the_plugin_guide_states_the_current_hook_api_version_and_every_version_in_its_history() -> None:
    section = _guide_section(1)
    assert f"HOOK_API_VERSION` is `{HOOK_API_VERSION}`" in section
    versions = {_added_in(hook) for hook in HOOKS} | {HOOK_API_VERSION}
    history = {line.split("|")[1].strip() for line in section.splitlines() if re.match(r"^\| \d+\.\d+ \|", line)}
    assert versions <= history, f"the hook API history table in section 1 lacks {sorted(versions - history)}"
