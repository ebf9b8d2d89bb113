"""What every scripting command of the CLI shares: options, services, output, errors.

Commands build the same ``Services`` the API uses (without the start-up
cleanup a server does; jobs go to the server's queue when a server serves
the workspace and run in this process otherwise, ``core/jobs/foreground.py``), print a human view or, with ``--json``, the data as JSON on
stdout. A domain error prints ``error: <message>`` on stderr and exits 1;
click's usage errors exit 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec

from modelyard.core.errors import ModelyardError, ProjectNotFoundError, ValidationError
from modelyard.core.ids import is_valid_id

if TYPE_CHECKING:  # importing the services pulls in torch: only when a command runs, never for --help
    from modelyard.core.services import Services

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1

workspace_option = click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="MODELYARD_WORKSPACE",
    default="workspace",
    show_default="./workspace; env MODELYARD_WORKSPACE",
    help="Workspace folder.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


def build_cli_services(workspace: Path, import_roots: Sequence[Path] = ()) -> Services:
    """The API's services over ``workspace``, for one command in this process.

    ``import_roots`` are the folders this command may import from: the CLI
    runs with the user's own rights, so the folder the user names is allowed
    (the server only allows the operator's ``--import-root`` folders).
    """
    from modelyard.core.services import build_services
    from modelyard.core.settings import Settings

    overrides: dict[str, Any] = {"workspace": workspace}
    if import_roots:
        overrides["import_roots"] = list(import_roots)
    return build_services(Settings.from_env(**overrides), prepare=False)


def domain_errors(command: F) -> F:
    """Turn domain and OS errors into ``error: ...`` on stderr and exit code 1 (never a traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ModelyardError as exc:
            fail(describe_error(exc))
        except OSError as exc:
            fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))

    return wrapper  # type: ignore[return-value]


def describe_error(exc: ModelyardError) -> str:
    """The message, prefixed with the field it names when the message does not already say it."""
    field = exc.details.get("field")
    if isinstance(field, str) and field and field not in exc.message:
        return f"{field}: {exc.message}"
    return exc.message


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    raise click.exceptions.Exit(EXIT_ERROR)


def emit(data: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """``--json``: the data (records included) as JSON on stdout; otherwise ``human`` shows that same document."""
    plain = msgspec.to_builtins(data, enc_hook=str)
    if as_json:
        click.echo(json.dumps(plain, indent=2, ensure_ascii=False))
    else:
        human(plain)


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain left-aligned text table (no borders: easy to read and to grep)."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def resolve_project(services: Services, ref: str) -> str:
    """A project id from an id or an exact project name (scripts use ids; people type names)."""
    if is_valid_id(ref, "proj"):
        services.workspace.existing_project_dir(ref)
        return ref
    matches = [p.id for p in services.projects.list() if p.name == ref]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValidationError(f"{len(matches)} projects are named '{ref}'; use the project id ({', '.join(matches)})",
                              field="project")
    raise ProjectNotFoundError(ref)


def progress_printer(label: str, enabled: bool = True) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback drawing a click progress bar on stderr."""
    state: dict[str, Any] = {"bar": None, "done": 0}

    def update(done: int, total: int) -> None:
        if not enabled or total <= 0:
            return
        bar = state["bar"]
        if bar is None:
            bar = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
            state["bar"] = bar
        bar.update(max(0, done - state["done"]))
        state["done"] = done
        if done >= total:
            bar.__exit__(None, None, None)
            state["bar"], state["done"] = None, 0

    return update


def submitted_note(quiet: bool = False) -> Callable[[dict[str, Any]], None]:
    """Tells the user that the server serving the workspace took the job, and that this command follows it."""

    def note(server: dict[str, Any]) -> None:
        if not quiet:
            click.echo(f"a modelyard server (pid {server.get('pid', '?')}, {server.get('address', '?')}) serves this "
                       "workspace: the job is queued there and followed here (Ctrl-C stops following, not the job)",
                       err=True)

    return note
