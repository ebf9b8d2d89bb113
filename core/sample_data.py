"""Generated sample data: simple shapes, as an image folder or as a COCO detection set.

Lets anyone try the product (and every test run) with no download: circles,
squares, triangles and stars in random colours, sizes, positions, rotations
and backgrounds, with pixel noise. Deterministic for a given seed.

- ``generate_shapes``: one shape per image, ``root/<shape>/*.png`` (classification).
- ``generate_shapes_detection``: 0-4 shapes per image and one COCO JSON
  (``annotations.json``) with a tight box around each (object detection).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")


def _polygon(cx: float, cy: float, radius: float, points: int, rotation: float, inner: float | None = None) -> list[tuple[float, float]]:
    vertices = []
    steps = points * 2 if inner is not None else points
    for i in range(steps):
        r = radius if inner is None or i % 2 == 0 else radius * inner
        angle = rotation + 2 * math.pi * i / steps
        vertices.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
    return vertices


def _colour(rng: random.Random, avoid: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    while True:
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if avoid is None or sum(abs(a - b) for a, b in zip(colour, avoid, strict=True)) > 200:
            return colour


def draw_shape(shape: str, size: int, rng: random.Random) -> Image.Image:
    """One RGB image of ``shape`` on a random background."""
    background = _colour(rng)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    fill = _colour(rng, avoid=background)
    radius = rng.uniform(0.22, 0.4) * size
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    rotation = rng.uniform(0, 2 * math.pi)
    _draw(draw, shape, cx, cy, radius, rotation, fill)
    noise = _noise(size, rng.uniform(5, 25), rng).convert("RGB")
    return Image.blend(image, noise, rng.uniform(0.03, 0.12))


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, rotation: float,
          fill: tuple[int, int, int] | int) -> None:
    """Fill ``shape`` inscribed in the circle of ``radius`` around ``(cx, cy)``."""
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, radius, 4, rotation), fill=fill)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, rotation), fill=fill)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, radius, 5, rotation, inner=0.45), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")


def _noise(size: int, sigma: float, rng: random.Random) -> Image.Image:
    """Gaussian grey noise around 128 drawn from ``rng`` (Pillow's ``effect_noise`` ignores every seed)."""
    import numpy as np

    values = np.random.default_rng(rng.getrandbits(64)).normal(128.0, sigma, (size, size))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))  # 2-D uint8: mode L


def generate_shapes(
    root: Path,
    per_class: int = 50,
    size: int = 64,
    seed: int = 0,
    shapes: tuple[str, ...] = SHAPES,
    image_format: str = "PNG",
) -> dict[str, int]:
    """Write ``root/<shape>/<shape>_<i>.png`` images; returns the count per class."""
    rng = random.Random(seed)
    extension = ".jpg" if image_format.upper() in ("JPEG", "JPG") else f".{image_format.lower()}"
    counts: dict[str, int] = {}
    for shape in shapes:
        folder = Path(root) / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            draw_shape(shape, size, rng).save(folder / f"{shape}_{index:04d}{extension}", format=image_format.upper().replace("JPG", "JPEG"))
        counts[shape] = per_class
    return counts


#: COCO file written by ``generate_shapes_detection`` beside the images.
DETECTION_ANNOTATIONS = "annotations.json"


def generate_shapes_detection(
    out_dir: Path,
    num_images: int = 1000,
    size: int = 96,
    seed: int = 0,
    shapes: tuple[str, ...] = SHAPES,
    max_objects: int = 4,
    background_fraction: float = 0.03,
) -> dict[str, object]:
    """Write ``out_dir/shapes_<i>.png`` canvases with 1-``max_objects`` shapes each, plus ``annotations.json`` (COCO).

    Each canvas has a random plain background, shapes of random colour (far
    from the background's), size (radius 9-20 % of the side), rotation and
    position, then pixel noise. Shapes never overlap: their circumscribing
    squares keep 2 px apart, so every box holds one shape. About
    ``background_fraction`` of the canvases have no shape (background images).
    Each box is the exact extent of its shape's drawn pixels, COCO
    ``[x, y, w, h]`` in pixels; category ids are 1.. in ``shapes`` order and
    ``file_name`` is relative to ``out_dir``. Deterministic for a seed.

    Returns ``{"path", "annotations", "num_images", "num_boxes", "num_background", "classes", "size", "seed"}``
    with ``classes`` the box count per shape.
    """
    if not 1 <= max_objects <= 16:
        raise ValueError(f"max_objects must be 1..16, got {max_objects}")
    if size < 32:
        raise ValueError(f"size must be at least 32 px for several shapes per image, got {size}")
    rng = random.Random(seed)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    counts = dict.fromkeys(shapes, 0)
    num_background = 0
    for index in range(num_images):
        file_name = f"shapes_{index:05d}.png"
        image_id = index + 1
        wanted = 0 if rng.random() < background_fraction else rng.randint(1, max_objects)
        image, boxes = _draw_canvas(size, wanted, shapes, rng)
        image.save(folder / file_name, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        num_background += not boxes
        for shape, (x0, y0, x1, y1) in boxes:
            counts[shape] += 1
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": shapes.index(shape) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
            })
    coco = {
        "info": {"description": f"modelyard shapes-detection sample data (seed {seed})", "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": shape, "supercategory": "shape"} for i, shape in enumerate(shapes)],
    }
    (folder / DETECTION_ANNOTATIONS).write_text(json.dumps(coco, indent=1) + "\n", encoding="utf-8")
    return {"path": str(folder.resolve()), "annotations": DETECTION_ANNOTATIONS, "num_images": num_images,
            "num_boxes": len(annotations), "num_background": num_background, "classes": counts, "size": size,
            "seed": seed}


def _draw_canvas(
    size: int, wanted: int, shapes: tuple[str, ...], rng: random.Random
) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """One noisy canvas with up to ``wanted`` shapes; each shape's box ``(x0, y0, x1, y1)``, x1/y1 exclusive."""
    background = _colour(rng)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float, float]] = []  # circumscribing squares
    boxes: list[tuple[str, tuple[int, int, int, int]]] = []
    for _ in range(wanted):
        shape = rng.choice(shapes)
        radius = rng.uniform(0.09, 0.2) * size
        rotation = rng.uniform(0, 2 * math.pi)
        for _attempt in range(30):  # rejection sampling; a crowded canvas just gets fewer shapes
            cx = rng.uniform(radius, size - radius)
            cy = rng.uniform(radius, size - radius)
            square = (cx - radius, cy - radius, cx + radius, cy + radius)
            if all(square[0] >= o[2] + 2 or o[0] >= square[2] + 2 or square[1] >= o[3] + 2 or o[1] >= square[3] + 2
                   for o in placed):
                break
        else:
            continue
        placed.append(square)
        mask = Image.new("L", (size, size), 0)
        _draw(ImageDraw.Draw(mask), shape, cx, cy, radius, rotation, 255)
        extent = mask.getbbox()  # the drawn pixels: the box is tight by construction
        if extent is None:
            continue
        _draw(draw, shape, cx, cy, radius, rotation, _colour(rng, avoid=background))
        boxes.append((shape, extent))
    noise = _noise(size, rng.uniform(5, 25), rng).convert("RGB")
    return Image.blend(image, noise, rng.uniform(0.03, 0.12)), boxes
