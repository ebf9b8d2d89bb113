"""``modelyard projects list|create|delete``: the projects resource of the API, from a shell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import build_cli_services, domain_errors, emit, json_option, resolve_project, table, workspace_option


@click.group()
def projects() -> None:
    """List, create and delete projects.

    The /api/projects resource from a shell.
    """


@projects.command("list")
@workspace_option
@json_option
@domain_errors
def list_projects(workspace: Path, as_json: bool) -> None:
    """List every project of the workspace, oldest first."""
    items = build_cli_services(workspace).projects.list()

    def human(rows: list[dict[str, Any]]) -> None:
        if not rows:
            click.echo("no projects yet: modelyard projects create NAME")
            return
        click.echo(table(((p["id"], p["name"], p["task"], p["created_at"]) for p in rows),
                         ("ID", "NAME", "TASK", "CREATED")))

    emit(items, as_json, human)


@projects.command("create")
@click.argument("name")
@click.option("--task", default="classification", show_default=True, help="What the project's models do.")
@click.option("--description", default="", help="Free text shown with the project.")
@workspace_option
@json_option
@domain_errors
def create_project(name: str, task: str, description: str, workspace: Path, as_json: bool) -> None:
    """Create a project named NAME and print its id."""
    project = build_cli_services(workspace).projects.create(name, task, description)
    emit(project, as_json, lambda p: click.echo(f"created project {p['id']} ({p['name']}, {p['task']})"))


@projects.command("delete")
@click.argument("project")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@workspace_option
@json_option
@domain_errors
def delete_project(project: str, yes: bool, workspace: Path, as_json: bool) -> None:
    """Delete PROJECT (id or name) with its dataset, runs, evaluations and exports.

    Refused while one of its runs is training.
    """
    services = build_cli_services(workspace)
    project_id = resolve_project(services, project)
    name = services.projects.get(project_id).name
    if not yes:
        click.confirm(f"Delete project {project_id} ({name}) and all its files?", abort=True, err=True)
    services.projects.delete(project_id)
    emit({"id": project_id, "deleted": True}, as_json, lambda d: click.echo(f"deleted project {d['id']} ({name})"))
