"""Generated sample data: a labelled image folder of simple shapes.

Lets anyone try the product (and every test run) with no download: circles,
squares, triangles and stars in random colours, sizes, positions, rotations
and backgrounds, with pixel noise. Deterministic for a given seed.
"""

from __future__ import annotations

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
    noise = _noise(size, rng.uniform(5, 25), rng).convert("RGB")
    return Image.blend(image, noise, rng.uniform(0.03, 0.12))


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
