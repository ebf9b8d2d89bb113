"""The worker process of every job kind: ``python -m modelyard.core.jobs.worker``.

``run KIND JOB_DIR --workspace ROOT [--log FILE]`` runs one job that a
claimant (the server's queue) has claimed for this process (``--log``: its
output appended to the job's log, for a cluster's job runner that captures
it elsewhere); ``warm --workspace ROOT``
imports everything a job needs first, then waits for one line on standard
input, ``{"kind": ..., "folder": ...}``, and runs that job the same way.

A worker talks to the server only through its job folder, so the server can
restart meanwhile. It refuses a job that is not ``running`` and claimed for
it (exit 2): a job runs exactly once. Extra DDP ranks, which Lightning starts
by re-running this command line with ``LOCAL_RANK`` set, join the job without
a claim of their own. Exit codes: 0 completed, 1 failed, 3 stopped, 2 refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from ..records import JobRecord
from ..workspace import Workspace
from .folder import JobFolder
from .kinds import KINDS, JobKind, kind_named
from .process import is_extra_rank, start_ticks

EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 3}
EXIT_REFUSED = 2

log = logging.getLogger("modelyard.worker")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelyard.core.jobs.worker", description="Run jobs (internal).")
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run", help="run one claimed job")
    run.add_argument("kind", choices=sorted(KINDS))
    run.add_argument("job_dir", type=Path)
    run.add_argument("--workspace", type=Path, required=True)
    run.add_argument("--log", type=Path, default=None, help="append this process's output to this file")
    warm = sub.add_parser("warm", help="import everything, then run the job named on standard input")
    warm.add_argument("--workspace", type=Path, required=True)
    return parser


def execute(workspace: Workspace, kind: JobKind, job_dir: Path) -> int:
    """Run the job in ``job_dir`` if it is claimed for this process; returns the exit code."""
    from ..plugin_manager import default_plugin_host

    folder = Path(job_dir).resolve()
    if not kind.owns(workspace, folder):
        print(f"error: {job_dir} is not a {kind.name} job folder of {workspace.root}", file=sys.stderr)
        return EXIT_REFUSED
    if not is_extra_rank():
        job = kind.job(workspace, folder)
        refusal = _bind(job)
        if refusal:
            print(f"error: {refusal}", file=sys.stderr)
            return EXIT_REFUSED
    log.info("worker pid %s: %s job %s starts", os.getpid(), kind.name, folder.name)
    status = kind.worker_function()(workspace, folder, default_plugin_host())
    log.info("worker pid %s: %s job %s ended %s", os.getpid(), kind.name, folder.name, status)
    return EXIT_CODES.get(status, 1)


def _bind(job: JobFolder[JobRecord]) -> str | None:
    """Record this process as the job's worker; the reason when the job is not claimed for it."""
    refusal: list[str] = []

    def bind(record: JobRecord) -> JobRecord:
        if not job.assigned_to_me(record):
            refusal.append(f"{job.job_id} is {record.status} and not claimed for this worker; "
                           "only the server's queue or the CLI starts jobs")
            return record
        me = os.getpid()
        record.worker_pid, record.worker_started, record.worker_pgid = me, start_ticks(me), os.getpgid(0)
        return record

    try:
        job.update(bind)
    except FileNotFoundError:
        return f"{job.job_id} was deleted before it started"
    return refusal[0] if refusal else None


def prepare_warm() -> None:
    """Import what every job kind needs, then rehearse once (the seconds a cold worker spends before its first step)."""
    from ..plugin_manager import default_plugin_host

    default_plugin_host().load_all()  # the plugins, and with them torch and torchvision
    for kind in KINDS.values():
        kind.worker_function()
    import lightning  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxslim  # noqa: F401

    from ..training.worker import engine  # noqa: F401

    _rehearse()


def _rehearse() -> None:
    """Run a tiny network forward, through an ONNX export and onnxruntime once.

    The first call of each is far slower than the next (kernel selection,
    exporter and session set-up: ~2 s together); a warm worker pays that
    while it waits rather than in the job. Nothing is written anywhere.
    """
    import io
    import warnings

    import onnxruntime
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2)).eval()
    example = torch.zeros(2, 3, 16, 16)
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net(example)
            torch.onnx.export(net, (example,), buffer, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        session.run(None, {"input": example.numpy()})
    except Exception as exc:  # a rehearsal only saves time; the job itself reports real errors
        log.warning("warm-up rehearsal failed (jobs still run, a little slower): %s", exc)


def wait_for_assignment(workspace: Workspace) -> int:
    """Warm mode: block on standard input for one job, then become that job's worker."""
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return 0  # the server went away before it needed us
    try:
        assignment = json.loads(line)
        kind = kind_named(str(assignment["kind"]))
        folder = Path(str(assignment["folder"])).resolve()
    except (ValueError, KeyError, TypeError) as exc:
        print(f"error: bad assignment {line!r}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    _redirect_output(kind.job(workspace, folder).log_path)
    os.chdir(folder)
    # Lightning starts extra DDP ranks by re-running sys.argv: make them run this job, not wait for one.
    sys.argv = [sys.argv[0], "run", kind.name, str(folder), "--workspace", str(workspace.root)]
    return execute(workspace, kind, folder)


def _redirect_output(log_path: Path) -> None:
    """From here on, everything this process prints goes to the job's log, as for a cold worker."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    workspace = Workspace(args.workspace)
    if args.mode == "run" and args.log is not None:
        _redirect_output(args.log)
    if args.mode == "warm":
        started = time.monotonic()
        prepare_warm()
        log.info("warm worker pid %s ready in %.1f s", os.getpid(), time.monotonic() - started)
        return wait_for_assignment(workspace)
    return execute(workspace, kind_named(args.kind), args.job_dir)


if __name__ == "__main__":
    sys.exit(main())
