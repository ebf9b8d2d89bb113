"""Data for the browser tests of the dataset and splits pages: a large dataset, an import ZIP.

``write_large_dataset`` writes a DESIGN-format ``dataset.json`` (DESIGN section 3) that lists
``num_images`` images, each a real file: a few small PNGs drawn with Pillow, hard-linked under every
name (a copy where the file system refuses links), so 100,000 images take a few seconds and no space.
Only the public file format is used, never the dataset index's internals (core/datasets is free to change).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import msgspec
from PIL import Image, ImageDraw

from modelyard.core.timeutil import utc_now_iso

CLASSES = ("circle", "square", "triangle")


def shape_png(shape: str, size: int, colour: tuple[int, int, int] = (200, 40, 40), noise_seed: int | None = None) -> bytes:
    """A PNG of one shape on a light background (noise makes each file's bytes unique)."""
    image = Image.new("RGB", (size, size), (240, 240, 235))
    draw = ImageDraw.Draw(image)
    margin = max(2, size // 6)
    box = (margin, margin, size - margin, size - margin)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(size // 2, margin), (size - margin, size - margin), (margin, size - margin)], fill=colour)
    if noise_seed is not None:
        rng = random.Random(noise_seed)
        for _ in range(size):
            image.putpixel((rng.randrange(size), rng.randrange(size)), tuple(rng.randrange(256) for _ in range(3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_large_dataset(project_dir: Path, num_images: int = 100_000, classes: tuple[str, ...] = CLASSES) -> dict[str, Any]:
    """Fill ``project_dir/dataset`` with ``num_images`` listed images (classes in turn); returns a summary.

    File ``img_000000.png`` .. are hard links to one source PNG per class (sizes 24, 32, 40 px ...).
    """
    dataset_dir = project_dir / "dataset"
    images_dir = dataset_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    sources_dir = dataset_dir / ".ui-test-sources"
    sources_dir.mkdir(exist_ok=True)
    sources = []
    for class_id, name in enumerate(classes):
        size = 24 + 8 * class_id
        data = shape_png(name, size, noise_seed=class_id)
        path = sources_dir / f"{name}.png"
        path.write_bytes(data)
        sources.append((path, size, len(data), hashlib.sha256(data).hexdigest()))
    records = []
    for i in range(num_images):
        class_id = i % len(classes)
        source, size, nbytes, sha = sources[class_id]
        filename = f"img_{i:06d}.png"
        target = images_dir / filename
        try:
            os.link(source, target)
        except OSError:
            target.write_bytes(source.read_bytes())
        records.append({
            "filename": filename, "width": size, "height": size, "size": nbytes, "format": "png", "sha256": sha,
            "source_path": f"{classes[class_id]}/{filename}", "split": [],
            "annotations": [{"type": "label", "class_id": class_id, "class_name": classes[class_id]}],
        })
    sizes = [24 + 8 * i for i in range(len(classes))]
    document = {
        "version": 1,
        "task": "classification",
        "source": {"kind": "generated", "format": "imagefolder", "imported_at": utc_now_iso()},
        "classes": list(classes),
        "split_names": [],
        "image_stats": {"num_images": num_images, "min_width": min(sizes), "max_width": max(sizes),
                        "min_height": min(sizes), "max_height": max(sizes), "formats": ["png"]},
        "images": records,
    }
    tmp = dataset_dir / "dataset.json.tmp"
    tmp.write_bytes(msgspec.json.encode(document))
    os.replace(tmp, dataset_dir / "dataset.json")
    return {"num_images": num_images, "classes": list(classes),
            "class_counts": {name: len(range(i, num_images, len(classes))) for i, name in enumerate(classes)}}


def import_zip(path: Path, classes: tuple[str, ...] = ("circle", "square"), per_class: int = 3, padding_bytes: int = 0) -> dict[str, int]:
    """An imagefolder ZIP at ``path``: ``per_class`` distinct PNGs per class, one exact duplicate and one non-image.

    ``padding_bytes``: size of an extra large image (random pixels), so the upload lasts long enough to show progress.
    Returns what the import should report: imported, duplicates, skipped.
    """
    imported = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        first = None
        for class_id, name in enumerate(classes):
            for i in range(per_class):
                data = shape_png(name, 32, colour=(40 + 60 * class_id, 90, 200 - 50 * i), noise_seed=100 * class_id + i)
                archive.writestr(f"{name}/{name}_{i}.png", data)
                first = first or data
                imported += 1
        assert first is not None
        archive.writestr(f"{classes[0]}/{classes[0]}_copy.png", first)  # same bytes as the first image
        archive.writestr(f"{classes[-1]}/notes.png", b"this is not an image at all")
        if padding_bytes:
            side = max(32, int((padding_bytes / 3) ** 0.5))
            noise = Image.frombytes("RGB", (side, side), random.Random(7).randbytes(side * side * 3))
            buffer = io.BytesIO()
            noise.save(buffer, format="PNG", compress_level=0)
            archive.writestr(f"{classes[-1]}/{classes[-1]}_big.png", buffer.getvalue())
            imported += 1
    return {"imported": imported, "duplicates": 1, "skipped": 1}
