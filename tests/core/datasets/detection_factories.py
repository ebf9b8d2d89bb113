"""Real detection datasets for tests: Pillow images with boxes written as COCO JSON, YOLO labels or Pascal VOC XML."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from PIL import Image

from tests.core.datasets.factories import write

#: name -> (width, height, [(class, [x, y, w, h] in pixels)])
Boxes = list[tuple[str, list[float]]]
SCENES: dict[str, tuple[int, int, Boxes]] = {
    "a.png": (64, 48, [("car", [4, 4, 20, 10]), ("dog", [30, 20, 10, 10])]),
    "b.png": (64, 48, [("car", [10, 10, 8, 8])]),
    "c.png": (32, 32, [("dog", [0, 0, 16, 16]), ("dog", [16, 16, 8, 8])]),
    "d.png": (40, 30, []),  # a background image
}
CLASSES = ["car", "dog"]


def scene_image(name: str, width: int, height: int) -> bytes:
    """A distinct real PNG per name (its hash drawn in the first row, so no two are duplicates)."""
    image = Image.new("RGB", (width, height), (90, 120, 150))
    for x, byte in enumerate(hashlib.sha256(name.encode()).digest()[: min(width, 32)]):
        image.putpixel((x, 0), (byte, 255 - byte, byte // 2))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def coco_document(scenes: dict[str, tuple[int, int, Boxes]] = SCENES, folder: str = "images") -> dict:
    categories = [{"id": 10 + i, "name": name} for i, name in enumerate(CLASSES)]
    ids = {name: 10 + i for i, name in enumerate(CLASSES)}
    images, annotations = [], []
    for number, (name, (width, height, boxes)) in enumerate(scenes.items(), start=1):
        images.append({"id": number, "file_name": f"{folder}/{name}" if folder else name, "width": width, "height": height})
        for cls, bbox in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": number, "category_id": ids[cls], "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_folder(root: Path, scenes: dict[str, tuple[int, int, Boxes]] = SCENES, document: dict | None = None) -> Path:
    """``root/annotations.json`` + ``root/images/*.png``."""
    for name, (width, height, _boxes) in scenes.items():
        write(root / "images" / name, scene_image(name, width, height))
    doc = document if document is not None else coco_document(scenes)
    write(root / "annotations.json", json.dumps(doc).encode())
    return root


def yolo_folder(root: Path, scenes: dict[str, tuple[int, int, Boxes]] = SCENES, names_yaml: str | None = None) -> Path:
    """``root/images/*.png`` + ``root/labels/*.txt`` (normalised) + ``root/data.yaml``."""
    for name, (width, height, boxes) in scenes.items():
        write(root / "images" / name, scene_image(name, width, height))
        lines = [f"{CLASSES.index(c)} {(x + w / 2) / width} {(y + h / 2) / height} {w / width} {h / height}"
                 for c, (x, y, w, h) in boxes]
        if boxes or name != "d.png":  # d.png has no label file at all: a background image
            write(root / "labels" / (Path(name).stem + ".txt"), ("\n".join(lines) + "\n").encode())
    write(root / "data.yaml", (names_yaml if names_yaml is not None else "names: [car, dog]\nnc: 2\n").encode())
    return root


def voc_xml(filename: str, width: int, height: int, boxes: Boxes) -> bytes:
    objects = "".join(
        f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{x + 1:g}</xmin><ymin>{y + 1:g}</ymin>"
        f"<xmax>{x + w:g}</xmax><ymax>{y + h:g}</ymax></bndbox></object>"
        for c, (x, y, w, h) in boxes
    )
    return (f"<annotation><folder>VOC</folder><filename>{filename}</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{objects}</annotation>").encode()


def voc_folder(root: Path, scenes: dict[str, tuple[int, int, Boxes]] = SCENES) -> Path:
    """``root/Annotations/*.xml`` + ``root/JPEGImages/*.png``."""
    for name, (width, height, boxes) in scenes.items():
        write(root / "JPEGImages" / name, scene_image(name, width, height))
        write(root / "Annotations" / (Path(name).stem + ".xml"), voc_xml(name, width, height, boxes))
    return root


def stored_boxes(client: TestClient[Litestar], project_id: str, filename: str) -> list[tuple[str, list[float]]]:
    """``(class_name, bbox)`` of an image's box annotations, as the API returns them."""
    response = client.get(f"/api/datasets/{project_id}/images/{filename}/info")
    assert response.status_code == 200, response.text
    return [(a["class_name"], a["bbox"]) for a in response.json()["data"]["annotations"] if a["type"] == "bbox"]


def expected_boxes(name: str) -> list[tuple[str, list[float]]]:
    return [(c, [float(v) for v in bbox]) for c, bbox in SCENES[name][2]]


@pytest.fixture
def detection_project(client: TestClient[Litestar]) -> str:
    response = client.post("/api/projects", json={"name": "Detection", "task": "object_detection"})
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


def imported(client: TestClient[Litestar], project_id: str, folder: Path, **body: object) -> dict:
    """The answer of a local import that must succeed (200)."""
    from tests.api.test_datasets import import_local

    response = import_local(client, project_id, folder, **body)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def skipped_reasons(data: dict) -> dict[str, str]:
    """An import answer's ``skipped`` as path -> reason."""
    return {item["path"]: item["reason"] for item in data["skipped"]}
