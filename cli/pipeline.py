"""``modelyard run PIPELINE.yaml``: a whole reproducible job from one file, in the foreground.

Prints each step as it runs (Lightning's progress bar while training), then a
summary table: accuracy, per-class F1, export verification and the paths of
everything written. ``pipeline-result.json`` in the run folder holds the same
in full. Exit code 0 when every step succeeded (exports verified), 1 otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec

from modelyard.core.records import RunEarlyStop
from modelyard.core.training.run_folder import describe_early_stop

from .common import build_cli_services, domain_errors, fail, json_option, progress_printer, workspace_option
from .jobs import per_class_table, verification_text


class ClickReporter:
    """Steps and notes on stderr, so stdout stays the summary (or the JSON)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.count = 0

    def step(self, title: str) -> None:
        self.count += 1
        if not self.quiet:
            click.secho(f"[{self.count}] {title}", bold=True, err=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            click.echo(f"    {message}", err=True)

    def progress(self, label: str) -> Callable[[int, int], None]:
        return progress_printer(f"    {label}", enabled=not self.quiet)


@click.command("run")
@click.argument("pipeline_file", metavar="PIPELINE.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@workspace_option
@click.option("--dataset", "dataset_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Use this folder or ZIP instead of the file's dataset.path (recorded in the result).")
@json_option
@domain_errors
def run(pipeline_file: Path, workspace: Path, dataset_path: Path | None, as_json: bool) -> None:
    """Run a pipeline file end to end.

    Steps: project, dataset, split, training, evaluation, exports.

    \b
    Each step reuses what exists: the project and experiment by name, the
    dataset when the source holds exactly its images and labels, the split
    when it is exactly what its ratios and seed give. Every run is new. The
    same file with the same seed reproduces the same metrics on the CPU.
    See README.md ("The pipeline file") and configs/demo.yaml.
    """
    from modelyard.core.training.worker.engine import ddp_child_run_dir, train_run

    if (child_run := ddp_child_run_dir()) is not None:  # an extra DDP rank re-running this command line
        from modelyard.core.workspace import Workspace

        raise SystemExit(0 if train_run(Workspace(workspace), child_run) == "completed" else 1)

    from modelyard.core.pipeline import load_pipeline, run_pipeline
    from modelyard.core.pipeline.schema import DatasetSpec
    from modelyard.core.pipeline.source import resolve_source

    pipeline_file = pipeline_file.resolve()
    pipeline = load_pipeline(pipeline_file)
    if dataset_path is not None:
        spec = pipeline.dataset
        pipeline.dataset = DatasetSpec(path=str(dataset_path.resolve()), format=spec.format, replace=spec.replace)
    source = resolve_source(pipeline.dataset.path, pipeline_file.parent)
    services = build_cli_services(workspace, import_roots=[source] if source.is_dir() else [])
    reporter = ClickReporter(quiet=as_json)
    outcome = run_pipeline(services, pipeline, pipeline_file.parent, reporter, source_file=pipeline_file,
                           progress_bar=not as_json)
    if as_json:
        import json

        click.echo(json.dumps(outcome.result, indent=2, ensure_ascii=False, default=str))
    else:
        sys.stderr.flush()
        click.echo(summary(outcome.result))
    if not outcome.ok:
        fail("; ".join(outcome.errors) or "the pipeline failed")


def summary(result: dict[str, Any]) -> str:
    """The final report: what was reused or made, the metrics, the exports and where every file is."""
    lines = ["", f"Pipeline {result['status']} in {result.get('duration_s', 0):.1f} s"]
    project, data, split = result["project"], result["dataset"], result["split"]
    lines.append(f"  project     {project['name']} ({project['id']}, {'created' if project['created'] else 'reused'})")
    lines.append(f"  dataset     {data['num_images']} images, {len(data['classes'])} classes "
                 f"({data['action']}; fingerprint {data['fingerprint'][:12]})")
    stats = split["stats"]
    lines.append(f"  split       #{split['index']} {split['name']}: train {stats.get('train')} / val {stats.get('val')} / "
                 f"test {stats.get('test')} ({'reused' if split['reused'] else 'created'}; "
                 f"assignment {split['assignment_hash'][:12]})")
    run = result.get("run") or {}
    if run:
        best = run.get("best_metrics") or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k.startswith("val/") and isinstance(v, float | int))
        lines.append(f"  run         {run['id']} {run['status']}; best epoch {run.get('best_epoch')} ({shown})")
        if run.get("stopped_early"):
            lines.append(f"              {describe_early_stop(msgspec.convert(run['stopped_early'], RunEarlyStop))}")
        record = run.get("reproducibility") or {}
        if record:
            versions = record.get("versions") or {}
            lines.append(f"  reproduce   seed {record.get('seed')}, {', '.join(record.get('devices') or [])}, "
                         f"torch {versions.get('torch')}, lightning {versions.get('lightning')}, "
                         f"modelyard {versions.get('modelyard')}")
    evaluation = result.get("evaluation")
    if evaluation and evaluation.get("accuracy") is not None:
        lines += ["", f"Evaluation on {' + '.join(evaluation['subsets'])} ({evaluation['num_images']} images, "
                      f"{evaluation['checkpoint']} checkpoint)",
                  f"  accuracy {evaluation['accuracy']:.4f}   macro F1 {evaluation['macro']['f1']:.4f}", ""]
        lines += ["  " + line for line in per_class_table(evaluation["per_class"]).splitlines()]
    elif evaluation and evaluation.get("map") is not None:
        lines += ["", f"Evaluation on {' + '.join(evaluation['subsets'])} ({evaluation['num_images']} images, "
                      f"{evaluation['checkpoint']} checkpoint)",
                  f"  mAP@.5 {evaluation['map_50']:.4f}   mAP@[.5:.95] {evaluation['map']:.4f}   "
                  f"precision {_number(evaluation.get('precision'))}   recall {_number(evaluation.get('recall'))}"
                  f"   (boxes scoring >= {evaluation.get('score_threshold')})", ""]
        lines += [f"  {'class':<20} {'AP':>8}"]
        lines += [f"  {name:<20} {_number(ap):>8}" for name, ap in (evaluation.get("per_class_ap") or {}).items()]
    exports = result.get("exports") or []
    if exports:
        lines += ["", "Exports"]
        for export in exports:
            verification = export.get("verification")
            text = verification_text(verification) if verification else f"{export['status']}: {(export.get('error') or {}).get('message')}"
            lines.append(f"  {export['format']:<11} {text}")
            if export.get("file"):
                lines.append(f"  {'':<11} {export['file']}")
    lines += ["", "Files"]
    files = [("run folder", run.get("dir")), ("frozen config", run.get("config")), ("metrics", run.get("metrics")),
             ("best checkpoint", (run.get("checkpoints") or {}).get("best")),
             ("reproducibility", str(Path(run["dir"]) / "reproducibility.json") if run.get("dir") else None),
             ("evaluation", (evaluation or {}).get("dir")),
             ("result", (result.get("files") or {}).get("result"))]
    files += [(f"{e['format']} model", e["file"]) for e in exports if e.get("status") == "completed"]
    lines += [f"  {label:<16} {path}" for label, path in files if path]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float | int) else "n/a"
