"""The ``modelyard`` command line (``python -m modelyard`` runs the same)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

import modelyard


class ModelyardGroup(click.Group):
    """Every failure prints ``error: <message>`` on stderr: usage errors (exit 2) as well as domain errors (exit 1).

    Click's own format (``Error: ...`` after the usage line) differed from the
    commands' ``error: ...``, so scripts had to match two shapes.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            if exc.ctx is not None:
                click.echo(exc.ctx.get_usage(), err=True)
                click.echo(f"Try '{exc.ctx.command_path} {exc.ctx.help_option_names[0]}' for help.", err=True)
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)  # an Exit raised by a command comes back as its code


@click.group(cls=ModelyardGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
@click.option(
    "--api-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the bearer token every /api request must send [env MODELYARD_API_TOKEN]. See docs/security.md.",
)
@click.option("--warm-workers", type=click.IntRange(0, 16), default=None,
              help="Pre-started job workers that have imported torch, so jobs start in a fraction of a second "
                   "[env MODELYARD_WARM_WORKERS; default 1; 0 starts every job cold].")
@click.option("--predict-cache-mb", type=click.IntRange(1), default=None,
              help="Memory the loaded prediction models may hold; past it the least recently used are unloaded "
                   "[env MODELYARD_PREDICT_CACHE_MB; default 4096]. See docs/prediction.md.")
@click.option("--predict-max-models", type=click.IntRange(1, 256), default=None,
              help="Prediction models loaded at once [env MODELYARD_PREDICT_MAX_MODELS; default 4].")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Where jobs run: worker processes on this machine, or Ray Jobs on a Ray cluster "
                   "[env MODELYARD_EXECUTOR; default local]. See docs/cluster.md.")
@click.option("--ray-address", default=None, metavar="URL",
              help="The Ray cluster's job endpoint, http://HEAD:8265 (with --executor ray) [env MODELYARD_RAY_ADDRESS].")
@click.option("--ray-token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="File holding the Ray cluster's auth token (RAY_AUTH_MODE=token) [env MODELYARD_RAY_TOKEN_FILE; "
                   "default: Ray's own lookup, RAY_AUTH_TOKEN or ~/.ray/auth_token].")
def serve(
    host: str,
    port: int,
    workspace: Path | None,
    import_roots: tuple[Path, ...],
    allowed_hosts: tuple[str, ...],
    log_level: str,
    api_token_file: Path | None,
    warm_workers: int | None,
    predict_cache_mb: int | None,
    predict_max_models: int | None,
    executor: str | None,
    ray_address: str | None,
    ray_token_file: Path | None,
) -> None:
    """Start the REST API server (uvicorn). One server per workspace: a second one is refused."""
    import uvicorn

    from modelyard.api.app import create_app
    from modelyard.core.errors import ModelyardError, WorkspaceInUseError
    from modelyard.core.server_lock import acquire_server_lock
    from modelyard.core.settings import Settings

    overrides: dict[str, object] = {"host": host, "port": port, "log_level": log_level}
    if warm_workers is not None:
        overrides["warm_workers"] = warm_workers
    elif not os.environ.get("MODELYARD_WARM_WORKERS"):
        overrides["warm_workers"] = 1
    if workspace is not None:
        overrides["workspace"] = workspace
    if predict_cache_mb is not None:
        overrides["predict_cache_mb"] = predict_cache_mb
    if predict_max_models is not None:
        overrides["predict_max_models"] = predict_max_models
    overrides.update(executor=executor, ray_address=ray_address, ray_token_file=ray_token_file)
    if import_roots:
        overrides["import_roots"] = list(import_roots)
    if allowed_hosts:
        overrides["allowed_hosts"] = list(allowed_hosts)
    if api_token_file is not None:
        token = api_token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise click.BadParameter(f"{api_token_file} is empty", param_hint="--api-token-file")
        overrides["api_token"] = token
    settings = Settings.from_env(**overrides)
    if "workspace" not in overrides and not os.environ.get("MODELYARD_WORKSPACE"):
        settings.workspace = Path("workspace").resolve()
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # before create_app: start-up recovery must never run under a live server
        server_lock = acquire_server_lock(settings.workspace, f"{host}:{port}")
    except WorkspaceInUseError as exc:
        raise click.ClickException(exc.message) from None
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_token:
        logging.getLogger("modelyard.api").warning(
            "listening on %s without an API token: anyone who can reach this port controls the service "
            "(set MODELYARD_API_TOKEN; docs/security.md)", host,
        )
    try:
        app = create_app(settings)
        if settings.executor != "local":  # refuse now, with the reason, rather than fail in the server's start-up
            app.state.services.queue.executor.connect()
    except ModelyardError as exc:
        server_lock.release()
        raise click.ClickException(exc.message) from None
    click.echo(f"modelyard {modelyard.__version__}: workspace {settings.workspace}", err=True)
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"web UI: http://{shown_host}:{port}/  API: http://{shown_host}:{port}/api  docs: http://{shown_host}:{port}/schema/swagger",
               err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level.lower())
    finally:
        server_lock.release()


# -- training ---------------------------------------------------------------------
TRAIN_EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 3}


@main.command()
@click.argument("config_file", metavar="CONFIG.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--project", "project_ref", required=True, help="Project (id or name) whose dataset to train on.")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Workspace folder [env MODELYARD_WORKSPACE; default ./workspace].",
)
@click.option("--experiment-name", default=None, help="Experiment to create or reuse [default: the config file's name].")
def train(config_file: Path, project_ref: str, workspace: Path | None, experiment_name: str | None) -> None:
    """Train CONFIG.yaml on a project's dataset.

    Creates (or reuses, by name) the experiment and freezes the config into a
    new run. When a `modelyard serve` serves the workspace, the run joins that
    server's queue and this command follows it; otherwise it trains here with
    a progress bar. Either way it writes the same run files as a run started
    through the API. Exit code: 0 completed, 1 failed, 3 stopped.
    """
    from modelyard.core.errors import ModelyardError
    from modelyard.core.jobs.foreground import train_or_follow
    from modelyard.core.settings import Settings
    from modelyard.core.training.config import load_config_file
    from modelyard.core.training.worker.engine import ddp_child_run_dir, train_run
    from modelyard.core.training.run_folder import create_run_folder, describe_early_stop, read_run
    from modelyard.core.workspace import Workspace

    from .common import build_cli_services, describe_error, fail, progress_printer, resolve_project, submitted_note

    settings = Settings.from_env(**({"workspace": workspace} if workspace is not None else {}))
    if workspace is None and not os.environ.get("MODELYARD_WORKSPACE"):
        settings.workspace = Path("workspace").resolve()
    store = Workspace(settings.workspace)  # no prepare(): a server may be using this workspace right now
    if (child_run := ddp_child_run_dir()) is not None:  # an extra DDP rank re-running this command line
        raise SystemExit(TRAIN_EXIT_CODES.get(train_run(store, child_run), 1))
    services = build_cli_services(settings.workspace)
    experiments = services.experiments
    name = experiment_name or config_file.stem
    try:
        project_id = resolve_project(services, project_ref)
        partial = load_config_file(config_file)
        existing = experiments.find_by_name(project_id, name)
        if existing is None:
            experiment = experiments.create(project_id, name, config=partial)
        else:
            experiment = experiments.update(project_id, existing["id"], {"config": partial}, replace_config=True)
        run_config = experiments.run_config(project_id, experiment["id"])
        run_dir = create_run_folder(store, project_id, experiment["id"], run_config)
    except ModelyardError as exc:
        fail(describe_error(exc))
    click.echo(f"experiment {experiment['id']} ({name}), run {run_dir.name}: {run_dir}", err=True)
    status = train_or_follow(store, run_dir, services.plugins, on_progress=progress_printer("training"),
                             on_submitted=submitted_note())
    record = read_run(run_dir)
    click.echo(f"run {run_dir.name}: {status}")
    if record.error:
        click.echo(f"error: {record.error.type}: {record.error.message}")
    if best := record.best_metrics:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in best.items() if k.startswith(("train/", "val/")) and v is not None)
        click.echo(f"best epoch {record.best_epoch} by {record.monitor}: {shown}")
    if record.stopped_early:
        click.echo(describe_early_stop(record.stopped_early))
    for kind, relative in (("best", record.checkpoints.best), ("last", record.checkpoints.last)):
        if relative:
            click.echo(f"{kind} checkpoint: {run_dir / relative}")
    raise SystemExit(TRAIN_EXIT_CODES.get(status, 1))


# -- scripting commands (one module per resource; they build the API's services) ----------
from .data import dataset, sample_data, split  # noqa: E402
from .jobs import evaluate, export  # noqa: E402
from .pipeline import run  # noqa: E402
from .predict import predict  # noqa: E402
from .projects import projects  # noqa: E402
from .plugin import plugin  # noqa: E402
from .system import devices, plugins  # noqa: E402

for _command in (projects, dataset, split, evaluate, export, predict, plugins, plugin, devices, sample_data, run):
    main.add_command(_command)


if __name__ == "__main__":
    main()
