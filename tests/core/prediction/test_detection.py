"""Predicting boxes: a trained simple_detector through its checkpoint and its ONNX export, in the image's pixels."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from modelyard.core.prediction.service import PredictOptions
from modelyard.plugins.object_detection.export import box_iou

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

#: Low enough that a model trained for seconds has boxes (its untrained background scores ~0.1).
THRESHOLD = 0.2


def val_images(services, run) -> list[tuple[str, bytes]]:
    dataset = json.loads(services.workspace.dataset_json(run.project_id).read_text(encoding="utf-8"))
    names = [image["filename"] for image in dataset["images"] if image["split"][0] == "val"][:8]
    images_dir = services.workspace.images_dir(run.project_id)
    return [(name, (images_dir / name).read_bytes()) for name in names]


def scaled(data: bytes, factor: int) -> bytes:
    """The same canvas ``factor`` times larger (the model sees the same pixels after its resize)."""
    with Image.open(io.BytesIO(data)) as image:
        big = image.convert("RGB").resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    return buffer.getvalue()


def test_checkpoint_boxes_are_in_the_pixels_of_the_image_as_sent(services, detection_run) -> None:
    project = detection_run.project_id
    model = services.predictions.load(project, run_id=detection_run.run_id)
    assert model["task"] == "object_detection"
    files = val_images(services, detection_run)
    answer = services.predictions.predict(project, None, files, PredictOptions(score_threshold=THRESHOLD))
    assert answer["task"] == "object_detection"
    boxes = 0
    for result in answer["results"]:
        scores = [p["score"] for p in result["predictions"]]
        assert scores == sorted(scores, reverse=True) and all(s >= THRESHOLD for s in scores)
        for p in result["predictions"]:
            x, y, w, h = p["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= result["width"] + 0.01
            assert p["class_name"] == model["classes"][p["class_id"]]
        boxes += len(scores)
    assert boxes > 0
    # four times larger uploads: the model sees nearly the same pixels (its resize differs in the last bits),
    # and its best box of each image comes back four times larger
    big = services.predictions.predict(project, None, [(n, scaled(d, 4)) for n, d in files],
                                       PredictOptions(score_threshold=THRESHOLD))
    compared = 0
    for small, large in zip(answer["results"], big["results"], strict=True):
        assert (large["width"], large["height"]) == (4 * small["width"], 4 * small["height"])
        if small["predictions"] and large["predictions"]:
            a, b = small["predictions"][0], large["predictions"][0]
            assert a["class_id"] == b["class_id"]
            assert np.allclose(np.array(a["bbox"]) * 4, b["bbox"], atol=2.0)  # 2 px of 256
            compared += 1
    assert compared >= len(files) // 2


def test_the_score_threshold_filters_and_defaults_to_one_half(services, detection_run) -> None:
    project = detection_run.project_id
    services.predictions.load(project, run_id=detection_run.run_id)
    files = val_images(services, detection_run)
    low = services.predictions.predict(project, None, files, PredictOptions(score_threshold=THRESHOLD))
    default = services.predictions.predict(project, None, files, PredictOptions())
    for a, b in zip(low["results"], default["results"], strict=True):
        assert [p for p in a["predictions"] if p["score"] >= 0.5] == b["predictions"]


def test_the_onnx_export_finds_the_same_boxes_as_the_checkpoint(services, detection_run) -> None:
    from modelyard.core.jobs.foreground import export_or_follow

    project = detection_run.project_id
    record = services.exports.create(project, experiment_id=detection_run.experiment_id, run_id=detection_run.run_id,
                                     format="onnx", options={"score_threshold": THRESHOLD})
    export_or_follow(services.workspace, services.workspace.exports_dir(project) / record.id, services.plugins)
    assert services.exports.get(project, record.id).status == "completed"
    onnx = services.predictions.load(project, export_id=record.id)
    checkpoint = services.predictions.load(project, run_id=detection_run.run_id)
    assert onnx["runtime"] == "onnxruntime"
    files = val_images(services, detection_run)
    options = PredictOptions(score_threshold=THRESHOLD)
    a = services.predictions.predict(project, onnx["id"], files, options)["results"]
    # the graph keeps only boxes above the threshold it was exported with, so that is the export's default
    assert services.predictions.predict(project, onnx["id"], files, PredictOptions())["results"] == a
    b = services.predictions.predict(project, checkpoint["id"], files, options)["results"]
    for x, y in zip(a, b, strict=True):
        assert [p["class_id"] for p in x["predictions"]] == [p["class_id"] for p in y["predictions"]]
        if x["predictions"]:
            def xyxy(ps):
                return np.array([[p["bbox"][0], p["bbox"][1], p["bbox"][0] + p["bbox"][2], p["bbox"][1] + p["bbox"][3]]
                                 for p in ps])
            assert np.diag(box_iou(xyxy(x["predictions"]), xyxy(y["predictions"]))).min() >= 0.99
