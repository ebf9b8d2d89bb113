"""The docs cannot drift from the code: endpoints, config fields and CLI commands are all documented.

- ``docs/api.md`` is generated from the app's OpenAPI document
  (``python -m modelyard.api.docgen > docs/api.md``): every operation must be
  in it, and the file must be what the generator prints today.
- ``docs/configuration.md`` is written by hand: every field of the experiment
  config and of the pipeline file (walked from the msgspec Structs) must have
  its row, with the schema's real default.
- ``README.md`` shows every CLI command.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
import pytest
import yaml

from modelyard.cli import main as cli_main
from modelyard.api.docgen import openapi_document, operations, render
from modelyard.core.pipeline.schema import Pipeline
from modelyard.core.training.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "api.md"
CONFIGURATION_MD = ROOT / "docs" / "configuration.md"
README = ROOT / "README.md"


# -- docs/api.md -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return openapi_document()


def test_every_endpoint_of_the_openapi_document_is_in_docs_api_md(openapi: dict[str, Any]) -> None:
    text = API_MD.read_text(encoding="utf-8")
    missing = [f"{method} {path}" for method, path, _ in operations(openapi) if f"### `{method} {path}`" not in text]
    assert not missing, f"undocumented endpoints {missing}: run `python -m modelyard.api.docgen > docs/api.md`"


def test_docs_api_md_is_exactly_what_the_generator_prints_today(openapi: dict[str, Any]) -> None:
    assert API_MD.read_text(encoding="utf-8") == render(openapi), (
        "docs/api.md is stale: run `python -m modelyard.api.docgen > docs/api.md`"
    )


def test_the_api_reference_documents_parameters_and_request_bodies(openapi: dict[str, Any]) -> None:
    text = render(openapi)
    assert "| `page_size` | query |" in text
    assert "Request body (`application/json`): [ProjectCreate](#projectcreate)" in text
    assert "### ProjectCreate" in text and "Ok[[Project](#project)]" in text
    headings = {line[4:].strip().lower() for line in text.splitlines() if line.startswith("### ")}
    broken = sorted({anchor for anchor in re.findall(r"\]\(#([a-z0-9]+)\)", text)} - headings)
    assert not broken, f"links to schemas without a section: {broken}"


# -- docs/configuration.md ---------------------------------------------------------------


def _struct_in(annotation: Any) -> tuple[type[msgspec.Struct] | None, str]:
    """The Struct a field holds (directly, optionally, or as list items) and the path suffix for it."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _struct_in(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation, ""
    if origin is list:
        inner, _ = _struct_in(typing.get_args(annotation)[0])
        return (inner, "[]") if inner else (None, "")
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        for argument in typing.get_args(annotation):
            inner, suffix = _struct_in(argument)
            if inner:
                return inner, suffix
    return None, ""


def field_paths(struct: type[msgspec.Struct], prefix: str = "") -> Iterator[tuple[str, Any, bool]]:
    """``(dotted path, default or NODEFAULT, is a section)`` for every field, depth first."""
    for info in msgspec.structs.fields(struct):
        path = prefix + info.name
        inner, suffix = _struct_in(info.type)
        if info.default is not msgspec.NODEFAULT:
            default = info.default
        elif info.default_factory is not msgspec.NODEFAULT:
            default = info.default_factory()
        else:
            default = msgspec.NODEFAULT
        yield path, default, inner is not None
        if inner is not None:
            yield from field_paths(inner, path + suffix + ".")


def shown_default(default: Any) -> str:
    """How the doc writes a default: YAML flow style, ``""`` for an empty string, *required* when there is none."""
    if default is msgspec.NODEFAULT:
        return "*required*"
    value = msgspec.to_builtins(default)
    if value == "":
        return '`""`'
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=True).strip()
    return f"`{text.removesuffix('...').strip()}`"


def documented_rows() -> dict[str, str]:
    """``field path -> default cell`` of every table row of docs/configuration.md."""
    rows = {}
    for line in CONFIGURATION_MD.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| `([^`]+)` \| (.*?) \| .+ \|$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


SCHEMAS = [("", ExperimentConfig), ("", Pipeline)]
ALL_FIELDS = [(path, default, section) for _, struct in SCHEMAS for path, default, section in field_paths(struct)]


def test_the_walk_finds_the_fields_of_both_schemas() -> None:
    paths = [path for path, _, _ in ALL_FIELDS]
    assert {"training.optimizer.lr", "data.augmentations.train[].params", "split.ratios.test",
            "exports[].options", "hardware.devices"} <= set(paths)
    assert len(paths) > 60


@pytest.mark.parametrize(("path", "default", "section"), ALL_FIELDS, ids=[p for p, _, _ in ALL_FIELDS])
def test_every_config_field_is_documented_with_its_real_default(path: str, default: Any, section: bool) -> None:
    rows = documented_rows()
    if section and path in ("model", "data", "training", "hardware", "project", "dataset", "split", "experiment",
                            "evaluate", "exports"):
        assert f"`{path}`" in CONFIGURATION_MD.read_text(encoding="utf-8"), f"section {path} is not in the doc"
        return
    assert path in rows, f"docs/configuration.md has no row for `{path}`"
    if not (section and default is msgspec.NODEFAULT):
        assert rows[path] == shown_default(default), f"`{path}`: the doc says {rows[path]}, the schema {shown_default(default)}"


def test_the_configuration_doc_has_no_rows_for_fields_that_do_not_exist() -> None:
    known = {path for path, _, _ in ALL_FIELDS}
    stale = sorted(set(documented_rows()) - known)
    assert not stale, f"docs/configuration.md documents fields the schema does not have: {stale}"


# -- README.md -------------------------------------------------------------------------------


def cli_commands(group: click.Group = cli_main, prefix: str = "modelyard") -> Iterator[str]:
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from cli_commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}"


@pytest.mark.parametrize("command", list(cli_commands()))
def test_the_readme_shows_every_cli_command(command: str) -> None:
    assert command in README.read_text(encoding="utf-8"), f"README.md never shows `{command}`"


def test_the_readme_keeps_the_two_setup_commands_at_the_top_and_links_the_references() -> None:
    text = README.read_text(encoding="utf-8")
    top = text[:1500]
    assert "make serve" in top and "make test" in top
    for link in ("docs/api.md", "docs/configuration.md", "docs/plugins.md", "configs/demo.yaml", "make demo"):
        assert link in text, link


def test_every_image_the_readme_shows_is_in_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "docs/images/ui-run.png" in images and "docs/images/ui-evaluation.png" in images
    for image in images:
        assert (README.parent / image).is_file(), image
