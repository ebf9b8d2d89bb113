"""``modelyard predict``: ask a run's checkpoint or an export about image files, in this process.

The model is loaded through the same ``PredictionService`` the API uses
(``core/prediction``), so a line printed here is the answer ``POST
/api/predict/{project_id}`` gives for the same file: the import's validation,
training's preprocessing, the task runtime's predictions. No server is needed
(a running one is not asked: loading a model is cheap, and its cache stays its
own).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .common import build_cli_services, domain_errors, fail, json_option, progress_printer, resolve_project, workspace_option

if TYPE_CHECKING:
    from modelyard.core.services import Services

#: The CSV's columns: one row per prediction (a detection's score is its confidence), one per image without any.
CSV_COLUMNS = ("path", "rank", "class_id", "class_name", "confidence", "bbox", "error")
#: The error code of a file that could not even be read (an unusable image is ``INVALID_IMAGE``, from core).
UNREADABLE = "UNREADABLE"


@click.command()
@click.argument("project")
@click.argument("sources", metavar="IMAGE_OR_FOLDER...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--run", "run_id", default=None, help="Run id (run-...) whose checkpoint answers.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default=None,
              help="Which checkpoint of the --run [default: best].")
@click.option("--export", "export_id", default=None, help="Export id (export-...) whose model file answers.")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Classes per image (classification) [default: 5].")
@click.option("--score-threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Lowest box score shown (object detection) [default: 0.5].")
@click.option("--device", default=None,
              help="Device id of `modelyard devices` (cpu, gpu:0, ...) [default: the first GPU, else cpu].")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Also write every prediction to this CSV file (written atomically).")
@workspace_option
@json_option
@domain_errors
def predict(project: str, sources: tuple[Path, ...], run_id: str | None, checkpoint: str | None,
            export_id: str | None, top_k: int | None, score_threshold: float | None, device: str | None,
            csv_path: Path | None, workspace: Path, as_json: bool) -> None:
    """Predict classes (or boxes) for image files and folders.

    Folders are walked recursively for image files (.jpg .png .bmp .gif .webp
    .tif ..., hidden entries skipped), in sorted order; a file named on the
    command line is always tried. One line per image on stdout:

    \b
      PATH<TAB>class confidence, class confidence, ...   (classification)
      PATH<TAB>N boxes: class score [x,y,w,h]; ...       (object detection)
      PATH<TAB>error: why the image cannot be used

    With --json each line is instead a JSON object: the API's result item plus
    "path". The model is --run RUN (with --checkpoint) or --export EXPORT;
    with neither, the best checkpoint of the project's latest completed run.
    Exit code 1 when no image could be predicted (or on any other error),
    2 for a wrong command line.
    """
    from modelyard.core.prediction.service import PredictOptions

    if run_id is not None and export_id is not None:
        raise click.UsageError("give either --run or --export, not both", ctx=click.get_current_context())
    if export_id is not None and checkpoint is not None:
        raise click.UsageError("--checkpoint goes with --run (an export is one model file)",
                               ctx=click.get_current_context())
    options = PredictOptions(top_k=top_k, score_threshold=score_threshold)
    images = list(image_paths(sources))
    if not images:
        fail(f"no image files in {', '.join(str(s) for s in sources)}")
    services = build_cli_services(workspace)
    try:
        project_id = resolve_project(services, project)
        if run_id is None and export_id is None:
            run_id = latest_completed_run(services, project_id)
            if not as_json:
                click.echo(f"using run {run_id} (the project's latest completed run)", err=True)
        model = services.predictions.load(project_id, run_id=run_id, checkpoint=checkpoint or "best",
                                          export_id=export_id, device=device)
        if not as_json:
            click.echo(f"model {model['id']}: {_source_text(model)} ({model['runtime']} on {model['device']})",
                       err=True)
        boxes = "bbox" in services.plugins.tasks.get(model["task"]).annotation_types
        answered = _predict_all(services, project_id, model["id"], images, options, as_json, boxes,
                                progress=any(source.is_dir() for source in sources) and not as_json)
    finally:
        services.predictions.close()
    if csv_path is not None:
        from modelyard.core.jsonio import atomic_write_bytes

        atomic_write_bytes(csv_path, csv_bytes(answered))
    if not any("predictions" in item for _, item in answered):
        fail(f"none of the {len(images)} image(s) could be predicted")


def _predict_all(services: Services, project_id: str, model_id: str, images: list[Path], options: Any,
                 as_json: bool, boxes: bool, progress: bool) -> list[tuple[Path, dict[str, Any]]]:
    """Send the images in request-sized chunks, printing each answer as it comes."""
    settings = services.settings
    update = progress_printer("predicting", progress)
    answered: list[tuple[Path, dict[str, Any]]] = []
    for chunk in chunks(images, settings.predict_max_files, settings.predict_max_request_bytes):
        uploads: list[tuple[str, bytes]] = []
        items: dict[int, dict[str, Any]] = {}
        for index, path in enumerate(chunk):
            try:
                uploads.append((path.name, path.read_bytes()))
            except OSError as exc:
                items[index] = {"filename": path.name, "error": {"code": UNREADABLE, "message": exc.strerror or str(exc)}}
        results = iter(services.predictions.predict(project_id, model_id, uploads, options)["results"]
                       if uploads else [])
        for index, path in enumerate(chunk):
            item = items.get(index) or next(results)
            answered.append((path, item))
            click.echo(json.dumps({**item, "path": str(path)}, ensure_ascii=False) if as_json else line(path, item, boxes))
        update(len(answered), len(images))
    return answered


def image_paths(sources: Sequence[Path]) -> Iterator[Path]:
    """Each source in order: a file as named, a folder's image files (recursive, sorted, hidden entries skipped)."""
    from modelyard.core.datasets.validate import EXTENSIONS

    suffixes = {suffix for group in EXTENSIONS.values() for suffix in group}
    for source in sources:
        if not source.is_dir():
            yield source
            continue
        found = []
        for folder, subfolders, files in os.walk(source):  # symlinked folders are not followed (no cycles)
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            found.extend(Path(folder) / name for name in files
                         if not name.startswith(".") and Path(name).suffix.lower() in suffixes)
        yield from sorted(found)


def chunks(paths: list[Path], max_files: int, max_bytes: int) -> Iterator[list[Path]]:
    """Request-sized groups: at most ``max_files`` images and about ``max_bytes`` (a bigger file goes alone)."""
    chunk: list[Path] = []
    size = 0
    for path in paths:
        try:
            length = path.stat().st_size
        except OSError:
            length = 0
        if chunk and (len(chunk) >= max_files or size + length > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += length
    if chunk:
        yield chunk


def latest_completed_run(services: Services, project_id: str) -> str:
    """The project's most recently finished run with a best checkpoint (what ``predict`` uses by default)."""
    from modelyard.core.errors import ConflictError

    candidates = []
    for experiment in services.experiments.list(project_id):
        for run in services.runs.list_runs(project_id, experiment["id"]):
            if run.status == "completed" and run.checkpoints.best:
                candidates.append((run.finished_at or "", run.created_at, run.id))
    if not candidates:
        raise ConflictError(f"project {project_id} has no completed run to predict with: train one, "
                            "or name a model with --run or --export", {"project_id": project_id})
    return max(candidates)[2]


# -- output ------------------------------------------------------------------------------------


def line(path: Path, item: dict[str, Any], boxes: bool = False) -> str:
    """``PATH<TAB>answer``: classes with confidences, boxes with scores (``boxes``: the task's answers are boxes), or the error."""
    if "error" in item:
        return f"{path}\terror: {item['error']['message']}"
    predictions = item["predictions"]
    if boxes or any("bbox" in p for p in predictions):
        shown = "; ".join(f"{p['class_name']} {p['score']:.4f} [{','.join(f'{v:g}' for v in p['bbox'])}]"
                          for p in predictions)
        count = f"{len(predictions)} box" + ("" if len(predictions) == 1 else "es")
        return f"{path}\t{count}" + (f": {shown}" if shown else "")
    if not predictions:
        return f"{path}\tno predictions"
    if all("confidence" in p for p in predictions):
        return f"{path}\t" + ", ".join(f"{p['class_name']} {p['confidence']:.4f}" for p in predictions)
    return f"{path}\t" + json.dumps(predictions, ensure_ascii=False)  # another task's answer, as it is


def csv_bytes(answered: Sequence[tuple[Path, dict[str, Any]]]) -> bytes:
    """The CSV: one row per prediction, ranked from 1; an image without any (or with an error) has one row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for path, item in answered:
        predictions = item.get("predictions") or []
        if not predictions:
            writer.writerow([path, "", "", "", "", "", item["error"]["message"] if "error" in item else ""])
        for rank, p in enumerate(predictions, start=1):
            confidence = p.get("confidence", p.get("score"))
            bbox = json.dumps(p["bbox"]) if "bbox" in p else ""
            writer.writerow([path, rank, p.get("class_id", ""), p.get("class_name", ""),
                             "" if confidence is None else repr(float(confidence)), bbox, ""])
    return buffer.getvalue().encode("utf-8")


def _source_text(model: dict[str, Any]) -> str:
    source = model.get("source") or {}
    if source.get("kind") == "export":
        return f"export {source.get('export_id')} ({source.get('format')}) of run {source.get('run_id')}"
    return f"run {source.get('run_id')}, {source.get('checkpoint')} checkpoint"
