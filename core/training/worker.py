"""The training worker's entry point: ``python -m modelyard worker train RUN_DIR --workspace ROOT [--resume]``.

The server starts it in its own session with output to ``train.log``; it
trains the run and exits. Exit codes: 0 completed, 1 failed, 3 stopped,
2 a command line that does not name a run folder of the workspace.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..ids import is_valid_id
from ..workspace import Workspace
from .run_files import RUN_JSON

EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 3}
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelyard worker train", description="Train one run folder (internal).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    return parser


def resolve_run_dir(workspace: Workspace, run_dir: Path) -> Path:
    """``run_dir`` resolved, refused unless it is ``projects/<proj>/experiments/<exp>/runs/<run>`` of ``workspace``."""
    resolved = Path(run_dir).resolve()
    try:
        parts = resolved.relative_to(workspace.projects_dir).parts
    except ValueError:
        raise SystemExit(f"error: {run_dir} is not inside {workspace.projects_dir}") from None
    shape_ok = (
        len(parts) == 5
        and is_valid_id(parts[0], "proj")
        and parts[1] == "experiments"
        and is_valid_id(parts[2], "exp")
        and parts[3] == "runs"
        and is_valid_id(parts[4], "run")
    )
    if not shape_ok or not (resolved / RUN_JSON).is_file():
        raise SystemExit(f"error: {run_dir} is not a run folder")
    return resolved


def main(argv: list[str] | None = None) -> int:
    """Train the run named on the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workspace = Workspace(args.workspace)
    try:
        run_dir = resolve_run_dir(workspace, args.run_dir)
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    from .engine import train_run

    status = train_run(workspace, run_dir, resume=args.resume, progress_bar=False)
    return EXIT_CODES.get(status, 1)
