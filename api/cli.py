"""The ``modelyard`` command line (``python -m modelyard`` runs the same)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

import modelyard


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(modelyard.__version__, "--version", prog_name="modelyard")
def main() -> None:
    """modelyard: train, evaluate and export image models on your own hardware.

    Start the REST API with `modelyard serve`; every command takes
    `--workspace DIR` (or MODELYARD_WORKSPACE) to choose where data lives.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Workspace folder [env MODELYARD_WORKSPACE; default ./workspace].",
)
@click.option(
    "--import-root",
    "import_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder from which local imports are allowed (repeatable) [env MODELYARD_IMPORT_ROOTS, ':'-separated].",
)
@click.option("--allowed-host", "allowed_hosts", multiple=True, help="Extra Host header value to accept (repeatable).")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
)
def serve(
    host: str,
    port: int,
    workspace: Path | None,
    import_roots: tuple[Path, ...],
    allowed_hosts: tuple[str, ...],
    log_level: str,
) -> None:
    """Start the REST API server (uvicorn)."""
    import uvicorn

    from modelyard.api.app import create_app
    from modelyard.core.settings import Settings

    overrides: dict[str, object] = {"host": host, "port": port, "log_level": log_level}
    if workspace is not None:
        overrides["workspace"] = workspace
    if import_roots:
        overrides["import_roots"] = list(import_roots)
    if allowed_hosts:
        overrides["allowed_hosts"] = list(allowed_hosts)
    settings = Settings.from_env(**overrides)
    if "workspace" not in overrides and not os.environ.get("MODELYARD_WORKSPACE"):
        settings.workspace = Path("workspace").resolve()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    click.echo(f"modelyard {modelyard.__version__}: workspace {settings.workspace}", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower())


if __name__ == "__main__":
    main()
