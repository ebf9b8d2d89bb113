"""Exporting a detector: the graph, its options and metadata, and how the exported file is verified.

**The graph.** One image in (``input`` ``[1, C, H, W]``, float32 normalised
like training's validation images, the run's image size; batch 1 because a
detector's answer per image has its own length), three outputs with a
dynamic box count ``K``: ``boxes`` ``[K, 4]`` (float ``x1, y1, x2, y2`` in
pixels of the *input*, i.e. the image resized to ``input_size``), ``scores``
``[K]`` (float, highest first) and ``labels`` ``[K]`` (int64 class ids,
``labels.json`` order). It is the architecture's ``export_forward``
(``DetectionNet``) followed by the score threshold, inside the graph: only
boxes with ``score >= score_threshold`` come out.

**The threshold** is the export option ``score_threshold`` (0 to 1, default
``SCORE_THRESHOLD`` = 0.5, the confidence evaluation counts precision and
recall at), stored in the file as ``modelyard.score_threshold`` and in the
record's ``metadata.export``. Lower it to see weaker boxes; the file cannot
return boxes below it.

**Verification** runs the run's validation images (its own preprocessing)
one at a time through the exported file and through the PyTorch network in
eval mode (its ``forward``, what evaluation and prediction run), and keeps the
boxes at or above the threshold on both sides. Per image, boxes are paired
greedily, highest IoU first, over pairs with IoU >= ``MATCH_IOU``. It passes
when no image has an unpaired box (a *count mismatch*), every pair has the
same label and an IoU >= ``IOU_REQUIRED`` (0.99), and every paired score
differs by at most the tolerance (``SCORE_TOLERANCE``). Float rounding may
move a box across a line, so an unpaired box is *excused* when its score is
within the tolerance of the threshold, or when the other model has an
overlapping box of the same label with a score within the tolerance (two
almost equal neighbouring heat-map cells, of which rounding chose the other
as the local maximum; seen on briefly trained models at low thresholds).
The record's ``verification`` says ``images``, ``boxes``, ``matched``,
``excused``, ``min_iou``, ``iou_required``, ``count_mismatches``,
``label_mismatches``, ``max_score_diff``, ``score_threshold``, ``tolerance``,
``box_agreement``, ``match_iou``, ``passed`` and, when it fails, a ``problem``
sentence.

**The exporter's policy** (``VerificationPolicy``): the score tolerance is
``max(atol, rtol)`` (scores are probabilities: their scale is 1; the default
policy's is ``SCORE_TOLERANCE``), and ``box_agreement`` (pairs with the same
label over pairs plus unpaired boxes that are not excused; 1.0 without boxes)
must reach ``min_box_agreement``. With the default minimum of 1.0 that adds
nothing to the rules above. A ``lossy`` policy compares agreement only: the
count, label, IoU and score-difference findings are reported, and only
``box_agreement`` (and finite outputs) decide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from modelyard.core import ValidationError, VerificationPolicy

#: Default of the ``score_threshold`` export option (evaluation's default confidence threshold too).
SCORE_THRESHOLD = 0.5
#: Every matched pair of boxes needs at least this IoU.
IOU_REQUIRED = 0.99
#: Boxes overlapping less than this are not a pair (each counts as unpaired).
MATCH_IOU = 0.5
#: Allowed score difference of a pair, and the band around the threshold where an unpaired box is excused.
SCORE_TOLERANCE = 1e-4
#: The same for float16 files (not exported today: ``fp16`` is refused for detection).
FP16_SCORE_TOLERANCE = 1e-2
#: The policies of an exporter that declares none (modelyard's defaults; a box agreement of 1.0).
DEFAULT_POLICY = VerificationPolicy(atol=SCORE_TOLERANCE, rtol=SCORE_TOLERANCE)
FP16_POLICY = VerificationPolicy(atol=FP16_SCORE_TOLERANCE, rtol=FP16_SCORE_TOLERANCE)

#: Output names in graph order, each with its dynamic axis: the box count.
OUTPUTS: dict[str, dict[int, str]] = {"boxes": {0: "num_boxes"}, "scores": {0: "num_boxes"}, "labels": {0: "num_boxes"}}

OPTIONS_SCHEMA: dict[str, Any] = {
    "score_threshold": {
        "type": "number",
        "minimum": 0.0,
        "maximum": 1.0,
        "default": SCORE_THRESHOLD,
        "description": "object_detection: the exported graph returns only boxes with at least this score.",
    },
}

#: Detections of one image: boxes [K, 4] float32, scores [K] float32, labels [K] int64.
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


class DetectionExport(nn.Module):
    """``export_forward`` of a ``DetectionNet`` plus the score threshold: what the exporters trace."""

    def __init__(self, net: nn.Module, score_threshold: float) -> None:
        super().__init__()
        self.net = net
        self.score_threshold = float(score_threshold)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        boxes, scores, labels = self.net.export_forward(images)  # type: ignore[operator]
        keep = scores >= self.score_threshold
        return boxes[keep], scores[keep], labels[keep].to(torch.int64)


def score_threshold(options: dict[str, Any]) -> float:
    return float(options.get("score_threshold", SCORE_THRESHOLD))


def check_options(options: dict[str, Any], format_defaults: dict[str, Any]) -> None:
    """One image per call, float32, and the graph's own axes: refuse a batch other than 1, ``fp16`` or changed ``dynamic_axes``."""
    threshold = options.get("score_threshold", SCORE_THRESHOLD)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise ValidationError("score_threshold must be a number from 0 to 1", field="options.score_threshold")
    shape = options.get("input_shape")
    if isinstance(shape, list) and shape and shape[0] != 1:
        raise ValidationError(
            f"options.input_shape {shape}: an object_detection export takes one image at a time (batch 1)",
            field="options.input_shape", details={"expected_batch": 1},
        )
    if options.get("fp16") is True:
        # onnxconverter-common's float16 pass leaves a float32 Resize output feeding a float16 cast in the
        # decoding head, and onnxruntime refuses the file; a float16 detector would also move boxes by pixels
        raise ValidationError("fp16 is not supported for object_detection exports; export float32",
                              field="options.fp16")
    if "dynamic_axes" in options and "dynamic_axes" in format_defaults and options["dynamic_axes"] != format_defaults["dynamic_axes"]:
        raise ValidationError(
            "dynamic_axes does not apply to an object_detection export: its input is one image and the box "
            "count of boxes, scores and labels is always dynamic; leave the option out",
            field="options.dynamic_axes",
        )


def export_module(net: nn.Module, options: dict[str, Any]) -> nn.Module:
    if not callable(getattr(net, "export_forward", None)):
        raise ValidationError(f"{type(net).__name__} has no export_forward (see DetectionNet); it cannot be exported",
                              field="format")
    return DetectionExport(net, score_threshold(options)).eval()


def _detections(boxes: Any, scores: Any, labels: Any) -> Detections:
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(scores, dtype=np.float32).reshape(-1),
            np.asarray(labels).astype(np.int64).reshape(-1))


def reference_outputs(net: nn.Module, batch: torch.Tensor) -> list[Detections]:
    """The network's eval-mode detections, one image per call like the file (every candidate; no threshold).

    One at a time, not in batches: a batch changes the float rounding a
    little, and a detector that keeps the local maxima of its heat map can
    then keep another of two almost equal neighbouring cells (seen on a
    briefly trained ``simple_detector``): a difference of batching, not of
    the export.
    """
    results: list[Detections] = []
    for index in range(int(batch.shape[0])):
        found = net(batch[index : index + 1])[0]
        results.append(_detections(found["boxes"].float().cpu(), found["scores"].float().cpu(), found["labels"].cpu()))
    return results


def exported_outputs(predict: Callable[[Any], Any], batch: np.ndarray, chunk: int) -> list[Detections]:
    """The exported file's answer, one image per call (``predict`` returns boxes, scores, labels)."""
    results: list[Detections] = []
    for index in range(batch.shape[0]):
        answer = predict(np.ascontiguousarray(batch[index : index + 1], dtype=np.float32))
        if isinstance(answer, dict):
            answer = [answer[name] for name in OUTPUTS]
        if not isinstance(answer, (list, tuple)) or len(answer) != len(OUTPUTS):
            raise ValueError(f"the exported model returned {type(answer).__name__}, not (boxes, scores, labels)")
        results.append(_detections(*answer))
    return results


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` ``[N, 4]`` with every box in ``b`` ``[M, 4]`` (xyxy); identical empty boxes: 1."""
    a = a.astype(np.float64)[:, None, :]
    b = b.astype(np.float64)[None, :, :]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area = lambda box: np.clip(box[..., 2] - box[..., 0], 0, None) * np.clip(box[..., 3] - box[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    same = np.all(a == b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), same.astype(np.float64))


def greedy_pairs(iou: np.ndarray, minimum: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, highest IoU first, each box in at most one pair, IoU >= ``minimum``."""
    if iou.size == 0:
        return []
    order = np.argsort(-iou, axis=None, kind="stable")
    used_a: set[int] = set()
    used_b: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for flat in order:
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < minimum:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return pairs


def _near_ties(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, other_boxes: np.ndarray,
               other_scores: np.ndarray, other_labels: np.ndarray, threshold: float, tolerance: float) -> np.ndarray:
    """Which unpaired boxes are excused: rounding may have put them on the other side of a line.

    Either the score is within ``tolerance`` of the threshold, or the other
    model has an overlapping box of the same label whose score is within
    ``tolerance`` (two almost equal neighbouring heat-map cells, of which
    rounding made the other the local maximum).
    """
    near = scores < threshold + tolerance
    if len(boxes) and len(other_boxes):
        same = (labels[:, None] == other_labels[None, :]) & (np.abs(scores[:, None] - other_scores[None, :]) <= tolerance)
        near |= (same & (box_iou(boxes, other_boxes) > 0)).any(axis=1)
    return near


def compare(reference: Sequence[Detections], exported: Sequence[Detections], threshold: float, half: bool,
            policy: VerificationPolicy | None = None) -> dict[str, Any]:
    """The record's ``verification`` for two lists of per-image detections (see the module docstring).

    ``policy`` is the exporter's (default: ``DEFAULT_POLICY``, ``FP16_POLICY`` for ``half``).
    """
    policy = policy or (FP16_POLICY if half else DEFAULT_POLICY)
    tolerance = policy.tolerance(1.0)
    result: dict[str, Any] = {"images": len(reference), "passed": False, "tolerance": tolerance,
                              "score_threshold": threshold, "iou_required": IOU_REQUIRED, "match_iou": MATCH_IOU}
    if len(reference) != len(exported):
        return {**result, "boxes": 0, "matched": 0, "excused": 0, "min_iou": None, "count_mismatches": len(reference),
                "label_mismatches": 0, "max_score_diff": None, "box_agreement": 0.0,
                "problem": f"the exported model answered for {len(exported)} of {len(reference)} images"}
    boxes = matched = count_mismatches = label_mismatches = excused = unexcused = 0
    ious: list[float] = []
    score_diffs: list[float] = []
    finite = True
    first_count: str | None = None
    for index, ((rb, rs, rl), (eb, es, el)) in enumerate(zip(reference, exported, strict=True)):
        finite = finite and bool(np.isfinite(eb).all() and np.isfinite(es).all())
        keep_r, keep_e = rs >= threshold, es >= threshold
        rb, rs, rl = rb[keep_r], rs[keep_r], rl[keep_r]
        eb, es, el = eb[keep_e], es[keep_e], el[keep_e]
        boxes += len(rs)
        pairs = greedy_pairs(box_iou(rb, eb))
        matched += len(pairs)
        for i, j in pairs:
            ious.append(float(box_iou(rb[i : i + 1], eb[j : j + 1])[0, 0]))
            score_diffs.append(abs(float(rs[i]) - float(es[j])))
            label_mismatches += int(rl[i] != el[j])
        paired_r = {i for i, _ in pairs}
        paired_e = {j for _, j in pairs}
        lone_r = [i for i in range(len(rs)) if i not in paired_r]
        lone_e = [j for j in range(len(es)) if j not in paired_e]
        near_r = _near_ties(rb[lone_r], rs[lone_r], rl[lone_r], eb, es, el, threshold, tolerance)
        near_e = _near_ties(eb[lone_e], es[lone_e], el[lone_e], rb, rs, rl, threshold, tolerance)
        excused += int(near_r.sum() + near_e.sum())
        unpaired = int((~near_r).sum() + (~near_e).sum())
        unexcused += unpaired
        if unpaired:
            count_mismatches += 1
            if first_count is None:
                first_count = f"image {index + 1}: PyTorch {len(rs)} boxes, exported {len(es)}"
    min_iou = min(ious) if ious else None
    max_score_diff = max(score_diffs) if score_diffs else None
    compared = matched + unexcused
    box_agreement = (matched - label_mismatches) / compared if compared else 1.0
    problems = []
    if not finite:
        problems.append("the exported model produced NaN or infinite outputs")
    if not policy.lossy:  # a lossy policy reports these and lets the box agreement decide
        if count_mismatches:
            problems.append(f"{count_mismatches} of {len(reference)} images have another number of boxes above the "
                            f"score threshold {threshold:g} ({first_count})")
        if label_mismatches:
            problems.append(f"{label_mismatches} matched boxes have another label")
        if min_iou is not None and min_iou < IOU_REQUIRED:
            problems.append(f"a matched box has IoU {min_iou:.4f} with PyTorch's (needs {IOU_REQUIRED})")
        if max_score_diff is not None and max_score_diff > tolerance:
            problems.append(f"a matched box's score differs by {max_score_diff:.3g} (tolerance {tolerance:.3g})")
    if box_agreement < policy.min_box_agreement - 1e-12:
        problems.append(f"box agreement {box_agreement:.4f} is below the policy's {policy.min_box_agreement:g}")
    if not reference:
        problems.append("no image to verify with")
    result.update({"boxes": boxes, "matched": matched, "excused": excused, "min_iou": min_iou,
                   "count_mismatches": count_mismatches,
                   "label_mismatches": label_mismatches, "max_score_diff": max_score_diff,
                   "box_agreement": box_agreement, "passed": not problems})
    if problems:
        result["problem"] = "; ".join(problems)
    return result


def summary(verification: dict[str, Any]) -> str:
    min_iou = verification.get("min_iou")
    return (f"{verification.get('boxes')} boxes at or above score {verification.get('score_threshold'):g}, "
            f"{verification.get('matched')} matched, {verification.get('excused')} near-ties excused (minimum IoU {'n/a' if min_iou is None else f'{min_iou:.4f}'}, "
            f"needs {verification.get('iou_required')}), {verification.get('count_mismatches')} images with another "
            f"box count, {verification.get('label_mismatches')} label mismatches, max score difference "
            f"{verification.get('max_score_diff')}, box agreement {verification.get('box_agreement')}")


#: The bundle README's lines after the format's (``outputs`` = [boxes, scores, labels] for ``x``): draw and print.
USAGE_CODE = """\
boxes, scores, class_ids = outputs
picture = ImageOps.exif_transpose(Image.open("image.jpg")).convert("RGB")
sx, sy = picture.width / w, picture.height / h  # boxes are in pixels of the resized input
draw = ImageDraw.Draw(picture)
for (x1, y1, x2, y2), score, class_id in zip(boxes.tolist(), scores.tolist(), class_ids.tolist()):
    box = [x1 * sx, y1 * sy, x2 * sx, y2 * sy]
    draw.rectangle(box, outline=(255, 0, 0), width=2)
    draw.text((box[0] + 2, box[1] + 2), f"{labels[class_id]} {score:.2f}", fill=(255, 0, 0))
    print(labels[class_id], round(score, 3), [round(v, 1) for v in box])
picture.save("detections.png")
"""

USAGE: dict[str, str] = {
    "imports": "from PIL import ImageDraw",
    "code": USAGE_CODE,
    "output": ("boxes [K, 4] (x1, y1, x2, y2 in pixels of the resized input; scale by original/input size), "
               "scores [K] (highest first) and labels [K] (int64 class ids in labels.json order), only boxes with "
               "score >= the export's score_threshold; the input is one image, batch 1"),
}
