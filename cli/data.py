"""``modelyard dataset``, ``modelyard split`` and ``modelyard sample-data``: data in, splits made, from a shell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import build_cli_services, domain_errors, emit, json_option, resolve_project, table, workspace_option


@click.group()
def dataset() -> None:
    """Import images and describe a project's dataset.

    The /api/datasets resource from a shell.
    """


@dataset.command("import")
@click.argument("project")
@click.argument("source", metavar="PATH_OR_ZIP", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "format_", default="auto", show_default=True,
              help="Importer id (imagefolder, csv, ... see `modelyard plugins`), or auto to detect it.")
@click.option("--replace", is_flag=True, help="Replace the dataset (its splits go too) instead of merging into it.")
@workspace_option
@json_option
@domain_errors
def import_dataset(project: str, source: Path, format_: str, replace: bool, workspace: Path, as_json: bool) -> None:
    """Import a folder or a ZIP of labelled images into PROJECT (id or name).

    Every file is validated; what cannot be imported is listed, never silently
    dropped. A second import merges unless --replace. Unlike the server, the
    CLI may read any folder you can read: it runs with your own rights.
    """
    from modelyard.core.pipeline.source import is_zip_file

    source = source.resolve()
    services = build_cli_services(workspace, import_roots=[source] if source.is_dir() else [])
    project_id = resolve_project(services, project)
    if source.is_dir():
        summary = services.datasets.import_local(project_id, str(source), format_, replace)
    elif is_zip_file(source):
        summary = services.datasets.import_zip(project_id, source, format_, replace)
    else:
        raise click.BadParameter(f"{source} is neither a folder nor a ZIP file", param_hint="PATH_OR_ZIP")

    def human(data: dict[str, Any]) -> None:
        click.echo(f"imported {data['imported']} image(s) into {project_id} with the {data['format']} importer; "
                   f"classes: {', '.join(data.get('classes') or []) or '(none)'}")
        if data.get("duplicates"):
            click.echo(f"{len(data['duplicates'])} duplicate(s) not imported again")
        for skipped in (data.get("skipped") or [])[:20]:
            click.echo(f"skipped {skipped.get('path')}: {skipped.get('reason')}")
        if len(data.get("skipped") or []) > 20:
            click.echo(f"... and {len(data['skipped']) - 20} more skipped (see --json)")

    emit(summary, as_json, human)


@dataset.command("info")
@click.argument("project")
@workspace_option
@json_option
@domain_errors
def dataset_info(project: str, workspace: Path, as_json: bool) -> None:
    """Classes, counts, image sizes and splits of PROJECT's dataset."""
    services = build_cli_services(workspace)
    info = services.datasets.info(resolve_project(services, project))

    def human(data: dict[str, Any]) -> None:
        click.echo(f"{data['num_images']} image(s), {len(data['classes'])} class(es), "
                   f"{data['num_unlabelled']} unlabelled")
        counts = data.get("class_counts") or {}
        if counts:
            click.echo(table(((name, count) for name, count in counts.items()), ("CLASS", "IMAGES")))
        stats = data.get("image_stats") or {}
        if stats.get("num_images"):
            click.echo(f"sizes {stats.get('min_width')}-{stats.get('max_width')} x "
                       f"{stats.get('min_height')}-{stats.get('max_height')} px, formats {', '.join(stats.get('formats') or [])}")
        names = data.get("split_names") or []
        click.echo("splits: " + (", ".join(f"#{i} {n}" for i, n in enumerate(names)) or "none"))

    emit(info, as_json, human)


@click.group()
def split() -> None:
    """Create and list train/val/test splits.

    The /api/splits resource from a shell.
    """


@split.command("create")
@click.argument("project")
@click.option("--name", required=True, help="Name of the new split, e.g. 80-10-10.")
@click.option("--train", type=float, required=True, help="Share of each class for training (0-1].")
@click.option("--val", type=float, default=0.0, show_default=True, help="Share for validation.")
@click.option("--test", type=float, default=0.0, show_default=True, help="Share for the final test.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=42, show_default=True,
              help="Same dataset and seed, same split.")
@click.option("--stratified/--no-stratified", default=True, show_default=True, help="Keep class proportions per subset.")
@workspace_option
@json_option
@domain_errors
def create_split(project: str, name: str, train: float, val: float, test: float, seed: int, stratified: bool,
                 workspace: Path, as_json: bool) -> None:
    """Add a split to PROJECT's dataset; images beyond the ratios get 'none'."""
    from modelyard.core.datasets.splits import check_ratios

    services = build_cli_services(workspace)
    created = services.splits.create(resolve_project(services, project), name, check_ratios(train, val, test), seed,
                                     stratified)

    def human(data: dict[str, Any]) -> None:
        stats = data["stats"]
        click.echo(f"split #{data['split_index']} {data['name']}: train {stats['train']} / val {stats['val']} / "
                   f"test {stats['test']} / none {stats['none']}")
        for warning in data.get("warnings") or []:
            click.echo(f"warning: {warning}", err=True)

    emit(created, as_json, human)


@split.command("list")
@click.argument("project")
@workspace_option
@json_option
@domain_errors
def list_splits(project: str, workspace: Path, as_json: bool) -> None:
    """The splits of PROJECT's dataset with their subset sizes."""
    services = build_cli_services(workspace)
    splits = services.splits.list(resolve_project(services, project))

    def human(rows: list[dict[str, Any]]) -> None:
        if not rows:
            click.echo("no splits yet: modelyard split create PROJECT --name NAME --train 0.8 --val 0.1 --test 0.1")
            return
        click.echo(table(((s["split_index"], s["name"], s["stats"].get("train"), s["stats"].get("val"),
                           s["stats"].get("test"), s["stats"].get("none")) for s in rows),
                         ("INDEX", "NAME", "TRAIN", "VAL", "TEST", "NONE")))

    emit(splits, as_json, human)


@click.group("sample-data")
def sample_data() -> None:
    """Generate sample datasets (no download needed)."""


@sample_data.command("shapes")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-class", type=click.IntRange(1, 100_000), default=50, show_default=True, help="Images per class.")
@click.option("--size", type=click.IntRange(8, 1024), default=64, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Same seed, same images.")
@json_option
@domain_errors
def shapes(directory: Path, per_class: int, size: int, seed: int, as_json: bool) -> None:
    """Write DIR/<shape>/*.png: circles, squares, triangles and stars (an image folder).

    Random colours, sizes, positions, rotations and backgrounds with pixel
    noise; deterministic for a seed. Import it with
    `modelyard dataset import PROJECT DIR`.
    """
    from modelyard.core.sample_data import generate_shapes

    counts = generate_shapes(directory, per_class=per_class, size=size, seed=seed)
    data = {"path": str(directory.resolve()), "classes": counts, "num_images": sum(counts.values()), "size": size,
            "seed": seed}
    emit(data, as_json, lambda d: click.echo(f"wrote {d['num_images']} images ({', '.join(counts)}) to {d['path']}"))


@sample_data.command("shapes-detection")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", type=click.IntRange(1, 1_000_000), default=1000, show_default=True, help="Number of images.")
@click.option("--size", type=click.IntRange(32, 2048), default=96, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Same seed, same images.")
@json_option
@domain_errors
def shapes_detection(directory: Path, images: int, size: int, seed: int, as_json: bool) -> None:
    """Write DIR/shapes_*.png with 1-4 shapes each and DIR/annotations.json (COCO boxes).

    Circles, squares, triangles and stars that never overlap, on random
    backgrounds with pixel noise; about 3 % of the images have no shape.
    Each box is tight around its shape's pixels. Deterministic for a seed.
    Import it into an object_detection project with
    `modelyard dataset import PROJECT DIR`; the simple_detector architecture
    trains on it in minutes on a CPU.
    """
    from modelyard.core.sample_data import generate_shapes_detection

    data = generate_shapes_detection(directory, num_images=images, size=size, seed=seed)
    emit(data, as_json, lambda d: click.echo(
        f"wrote {d['num_images']} images with {d['num_boxes']} boxes ({d['num_background']} without any shape) "
        f"and {d['annotations']} to {d['path']}"))
