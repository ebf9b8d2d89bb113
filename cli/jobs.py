"""``modelyard evaluate`` and ``modelyard export``: the API's jobs, from the command line.

Each command creates the job through the same service as ``POST
/api/evaluation`` / ``POST /api/export`` (same checks, same record files), then
runs it in this process with a progress bar, or, when a server serves the
workspace, leaves it to that server's queue and follows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import msgspec
import yaml

from .common import (
    build_cli_services,
    domain_errors,
    emit,
    fail,
    json_option,
    progress_printer,
    resolve_project,
    submitted_note,
    table,
    workspace_option,
)

run_option = click.option("--run", "run_id", required=True, help="Run id (run-...) whose checkpoint to use.")
checkpoint_option = click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
                                 show_default=True, help="Which checkpoint of the run.")


@click.command()
@click.argument("project")
@run_option
@checkpoint_option
@click.option("--split-index", type=click.IntRange(min=0), default=None,
              help="Split to take images from [default: the one the run trained on].")
@click.option("--subset", "subsets", multiple=True, type=click.Choice(["train", "val", "test"]),
              help="Subset(s) to evaluate (repeatable) [default: test].")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@workspace_option
@json_option
@domain_errors
def evaluate(project: str, run_id: str, checkpoint: str, split_index: int | None, subsets: tuple[str, ...],
             batch_size: int, workspace: Path, as_json: bool) -> None:
    """Evaluate a run's checkpoint, image by image.

    Prints accuracy and per-class precision/recall/F1; the per-image results
    stay in the evaluation folder (and at GET /api/evaluation/.../results).
    Exit code 1 when the evaluation fails.
    """
    from modelyard.core.jobs.foreground import evaluate_or_follow, experiment_of_run

    services = build_cli_services(workspace)
    project_id = resolve_project(services, project)
    created = services.evaluations.create(
        project_id, experiment_id=experiment_of_run(services.workspace, project_id, run_id), run_id=run_id,
        checkpoint=checkpoint, split_index=split_index, split_subset=list(subsets) or "test", batch_size=batch_size,
    )
    folder = services.workspace.evaluations_dir(project_id) / created.id
    evaluate_or_follow(services.workspace, folder, services.plugins, progress_printer("evaluating", not as_json),
                       submitted_note(as_json))
    record = services.evaluations.get(project_id, created.id)
    emit(record, as_json, _print_evaluation)
    if record.status != "completed":
        fail(f"evaluation {record.id} {record.status}: {record.error.message if record.error else 'no error recorded'}")


def _print_evaluation(record: dict[str, Any]) -> None:
    metrics = record.get("metrics") or {}
    if not metrics:
        return
    click.echo(f"evaluation {record['id']}: {record.get('num_images')} image(s) of split "
               f"'{record.get('split_name')}' {record.get('split_subset')}")
    click.echo(f"accuracy {metrics['accuracy']:.4f}   macro F1 {metrics['macro']['f1']:.4f}   "
               f"weighted F1 {metrics['weighted']['f1']:.4f}")
    click.echo(per_class_table(metrics.get("per_class") or {}))


def per_class_table(per_class: dict[str, dict[str, Any]]) -> str:
    """Precision, recall, F1 and support per class."""
    return table(
        ((name, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]) for name, v in per_class.items()),
        ("CLASS", "PRECISION", "RECALL", "F1", "SUPPORT"),
    )


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs; values are YAML scalars or lists (``17``, ``true``, ``[1, 3, 64, 64]``)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--option")
        try:
            options[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise click.BadParameter(f"the value of {key.strip()} is not valid YAML: {raw!r}", param_hint="--option") from None
    return options


@click.command()
@click.argument("project")
@run_option
@checkpoint_option
@click.option("--format", "format_", default="onnx", show_default=True,
              help="Export format id (see `modelyard plugins` or GET /api/export/formats).")
@click.option("--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="A format option, e.g. opset_version=17 or simplify=false (repeatable).")
@workspace_option
@json_option
@domain_errors
def export(project: str, run_id: str, checkpoint: str, format_: str, option_pairs: tuple[str, ...], workspace: Path,
           as_json: bool) -> None:
    """Export a run's checkpoint and verify the file.

    The exported model and PyTorch run on real dataset images and must agree.
    Prints the file's path and the verification (max abs difference, top-1
    agreement). Exit code 1 when the export or its verification fails.
    """
    from modelyard.core.jobs.foreground import experiment_of_run, export_or_follow

    options = parse_options(option_pairs)
    services = build_cli_services(workspace)
    project_id = resolve_project(services, project)
    created = services.exports.create(
        project_id, experiment_id=experiment_of_run(services.workspace, project_id, run_id), run_id=run_id,
        checkpoint=checkpoint, format=format_, options=options,
    )
    folder = services.workspace.exports_dir(project_id) / created.id
    export_or_follow(services.workspace, folder, services.plugins, progress_printer(f"exporting {format_}", not as_json),
                     submitted_note(as_json))
    record = services.exports.get(project_id, created.id)
    path = str(folder / record.file.name) if record.file else None
    emit({**msgspec.to_builtins(record), "path": path}, as_json, _print_export)
    if record.status != "completed":
        fail(f"export {record.id} {record.status}: {record.error.message if record.error else 'no error recorded'}")


def _print_export(record: dict[str, Any]) -> None:
    verification = record.get("verification")
    if verification:
        click.echo(f"export {record['id']} ({record['format']}): {verification_text(verification)}")
    if record.get("path"):
        click.echo(f"file: {record['path']}")


def verification_text(verification: dict[str, Any]) -> str:
    """``verified`` or ``NOT verified`` with the numbers behind it (logits for a classifier, boxes for a detector)."""
    verdict = "verified" if verification.get("passed") else "NOT verified"
    if "min_iou" in verification:
        iou = verification.get("min_iou")
        numbers = (f"{verification.get('matched')} of {verification.get('boxes')} boxes matched, min IoU "
                   + (f"{iou:.4f}" if isinstance(iou, float | int) else "n/a")
                   + f", at score {verification.get('score_threshold')} on {verification.get('images')} image(s)")
        return f"{verdict} ({numbers})"
    diff = verification.get("max_abs_diff")
    numbers = (f"max abs diff {diff:.2e}" if isinstance(diff, float | int) else "max abs diff n/a") + \
        f", top-1 agreement {100 * float(verification.get('top1_agreement') or 0):.1f}% on {verification.get('images')} image(s)"
    return f"{verdict} ({numbers})"
