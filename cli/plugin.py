"""``modelyard plugin new NAME``: write a ready plugin package to start from.

The package (``modelyard-NAME``, import package ``modelyard_NAME``) has a
pyproject with the entry point, one architecture, one importer and one export
format, tests using ``modelyard.testing`` and a README; it installs and passes
its tests as written. The files come from ``cli/plugin_template/`` (package
data), filled in with ``string.Template``.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import click

from .common import emit, fail, json_option

#: Where each template file goes in the new package (``{package}`` is the import package's name).
TEMPLATE_FILES: dict[str, str] = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    ".gitignore": "gitignore.tmpl",
    "src/{package}/__init__.py": "__init__.py.tmpl",
    "src/{package}/plugin.py": "plugin.py.tmpl",
    "tests/test_plugin.py": "test_plugin.py.tmpl",
}
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")


def validate_name(name: str) -> str:
    """``name`` as the plugin's entry-point name and part of a Python identifier, or ``click.BadParameter`` saying why not."""
    from modelyard.core.plugin_manager import DEFAULT_PLUGINS

    if not NAME_PATTERN.fullmatch(name) or name.endswith("_") or "__" in name:
        raise click.BadParameter(
            f"{name!r} is not a plugin name: use 1-40 lowercase letters, digits and single underscores, "
            "starting with a letter (e.g. acme or acme_models)", param_hint="NAME")
    if keyword.iskeyword(name):
        raise click.BadParameter(f"{name!r} is a Python keyword; choose another name", param_hint="NAME")
    if name.startswith("modelyard"):
        raise click.BadParameter(f"leave out the 'modelyard' prefix: the package is named modelyard-NAME already "
                                 f"(try {name.removeprefix('modelyard').strip('_') or 'acme'!r})", param_hint="NAME")
    builtins = {module.rsplit(".", 1)[-1] for module in DEFAULT_PLUGINS}
    if name in builtins:
        raise click.BadParameter(f"{name!r} is the name of a built-in plugin; a plugin with that name would not load",
                                 param_hint="NAME")
    return name


def template_values(name: str) -> dict[str, str]:
    from modelyard.core import HOOK_API_VERSION
    from modelyard.core.plugin_manager import ENTRY_POINT_GROUP

    return {
        "name": name,
        "package": f"modelyard_{name}",
        "distribution": f"modelyard-{name.replace('_', '-')}",
        "group": ENTRY_POINT_GROUP,
        "hook_api": HOOK_API_VERSION,
    }


def write_plugin_package(name: str, parent: Path) -> tuple[Path, list[str]]:
    """Write the package for plugin ``name`` into ``parent/modelyard-NAME``; returns the folder and its files.

    Raises ``FileExistsError`` when the folder exists (nothing is written then).
    """
    values = template_values(validate_name(name))
    target = parent / values["distribution"]
    target.mkdir(parents=True, exist_ok=False)  # the refusal to overwrite, without a check-then-write race
    templates = resources.files("modelyard.cli").joinpath("plugin_template")
    written = []
    for destination, source in TEMPLATE_FILES.items():
        relative = destination.format(package=values["package"])
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(templates.joinpath(source).read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
        written.append(relative)
    return target, written


@click.group()
def plugin() -> None:
    """Write plugin packages (`modelyard plugins` lists the loaded plugins)."""


@plugin.command("new")
@click.argument("name")
@click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default="the current folder", help="Folder to create the package folder modelyard-NAME in.")
@json_option
def new(name: str, parent: Path, as_json: bool) -> None:
    """Write a ready plugin package for the plugin NAME into DIR/modelyard-NAME.

    NAME is the plugin's entry-point name (lowercase letters, digits, '_').
    The package registers an architecture NAME_net, an importer NAME_txt and
    an export format NAME_pt2, has tests using modelyard.testing and a README,
    and declares the hook API of this modelyard. An existing folder is never
    overwritten. See docs/plugins.md.
    """
    validate_name(name)
    try:
        target, files = write_plugin_package(name, parent)
    except FileExistsError as exc:
        fail(f"{exc.filename} already exists; nothing was written (choose another NAME or --dir)")
        return
    values = template_values(name)
    data: dict[str, Any] = {"path": str(target), **{k: values[k] for k in ("name", "package", "distribution", "hook_api")},
                            "files": files}

    def human(d: dict[str, Any]) -> None:
        click.echo(f"Created {d['path']}: plugin {d['name']} (package {d['package']}, hook API {d['hook_api']})")
        for file in d["files"]:
            click.echo(f"  {file}")
        click.echo(f"Next: cd {d['path']} && pip install -e '.[test]' && pytest")

    emit(data, as_json, human)
