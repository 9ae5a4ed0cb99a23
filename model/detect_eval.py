"""How well a detector finds the signs of annotated frames (DFG, generated scenes).

Matching is pycocotools' (COCOeval, bbox, one IoU threshold, class-agnostic): detections are
taken best score first, each matched to the unmatched ground-truth sign it overlaps most
(IoU >= 0.5). A sign marked `ignore` is a COCO crowd region: it counts neither as a sign to
find nor, when a detection lands on it (intersection over the detection's area >= 0.5), as a
false sign. Sizes are bucketed by the longer side of the ground-truth box as annotated, to
the nearest pixel (< 32, 32-96, > 96 px): COCO's area ranges are given the squared longer
side instead of the area, so its own size filter buckets them (an unmatched detection falls
into the bucket of its own longer side, as COCO does).

Reported: precision, recall and F1 at IoU 0.5, recall per size and for signs of 32 px and
more, false signs per frame, and precision, recall and false signs per frame for the bar of
32 px and more alone (COCO's area-range rule: an unmatched detection whose longer side is
under 32 px is left out, as the DFG annotation holds no sign under 30 px to match it) with
95 % bootstrap intervals of its recall and false signs per frame, mask IoU of the matched
signs (against the polygons or RLE of the annotation), and, where the annotation states CTSRD
classes, the class accuracy of the matched signs.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data.frames import FrameRecord, instance_mask, read_coco_frames
from data.images import read_rgb
from data.records import DataError
from model.detect import Detection

IOU = 0.5
# By the longer side of the box in whole pixels; the half-pixel bounds keep the buckets
# apart (COCO's ranges include both ends).
SIZE_BUCKETS = {
    "all": (0, 1e5),
    "small (<32)": (0, 31.5),
    "medium (32-96)": (31.5, 96.5),
    "large (>96)": (96.5, 1e5),
    "32 and more": (31.5, 1e5),
}
BAR = "32 and more"  # the size range of the bar
MAX_DETECTIONS = 1000  # per frame: more than any detector here finds
BOOTSTRAP_RESAMPLES = 2000  # draws of the frames behind the bar's intervals (seeded: repeatable)
BOOTSTRAP_SEED = 0


@dataclass
class _Counts:
    """Per frame, in one size bucket: detections matched and false, signs to find, found."""

    true_by_frame: np.ndarray
    false_by_frame: np.ndarray
    signs_by_frame: np.ndarray
    found_by_frame: np.ndarray

    @classmethod
    def zeros(cls, frames: int) -> _Counts:
        return cls(*(np.zeros(frames, np.int64) for _ in range(4)))

    @property
    def true(self) -> int:
        return int(self.true_by_frame.sum())

    @property
    def false(self) -> int:
        return int(self.false_by_frame.sum())

    @property
    def signs(self) -> int:
        return int(self.signs_by_frame.sum())

    @property
    def found(self) -> int:
        return int(self.found_by_frame.sum())


def _longer_side_squared(box: Sequence[float]) -> float:
    """The size key of the buckets: the longer side to the nearest whole pixel (an exact box
    of a shrunk set has fractional sides), squared."""
    x1, y1, x2, y2 = box
    return float(math.floor(max(x2 - x1, y2 - y1) + 0.5)) ** 2


def _coco(frames: Sequence[FrameRecord], annotations: list[dict]) -> COCO:
    coco = COCO()
    coco.dataset = {
        "images": [
            {"id": index, "width": frame.width, "height": frame.height}
            for index, frame in enumerate(frames)
        ],
        "categories": [{"id": 1, "name": "sign"}],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def match(
    frames: Sequence[FrameRecord], detections: Sequence[Sequence[Detection]]
) -> tuple[dict[str, _Counts], list[tuple[int, int, int]]]:
    """pycocotools' matching of `detections` (one list per frame) to the frames' signs:
    counts per size bucket, and the matched (frame, detection, instance) index triples."""
    if len(frames) != len(detections):
        raise ValueError(f"{len(detections)} detection lists for {len(frames)} frames")
    truth, results = [], []
    for index, frame in enumerate(frames):
        for number, sign in enumerate(frame.instances):
            box = sign.scored_box
            x1, y1, x2, y2 = box
            truth.append(
                {
                    "id": len(truth) + 1,
                    "image_id": index,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": _longer_side_squared(box),
                    "iscrowd": int(sign.ignore),
                    "ignore": int(sign.ignore),
                    "_index": number,
                }
            )
        for number, detection in enumerate(detections[index]):
            x1, y1, x2, y2 = detection.box
            results.append(
                {
                    "id": len(results) + 1,
                    "image_id": index,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": _longer_side_squared(detection.box),
                    "score": float(detection.score),
                    "iscrowd": 0,
                    "_index": number,
                }
            )
    ground, found = _coco(frames, truth), _coco(frames, results)
    evaluation = COCOeval(ground, found, "bbox")
    evaluation.params.iouThrs = np.array([IOU])
    evaluation.params.maxDets = [MAX_DETECTIONS]
    evaluation.params.areaRng = [[low**2, high**2] for low, high in SIZE_BUCKETS.values()]
    evaluation.params.areaRngLbl = list(SIZE_BUCKETS)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()

    frame_count = len(frames)
    counts = {name: _Counts.zeros(frame_count) for name in SIZE_BUCKETS}
    pairs = []
    for position, name in enumerate(SIZE_BUCKETS):
        for item in evaluation.evalImgs[position * frame_count : (position + 1) * frame_count]:
            if item is None:
                continue
            matched = item["dtMatches"][0] > 0
            ignored = item["dtIgnore"][0].astype(bool)
            bucket, frame = counts[name], item["image_id"]
            bucket.true_by_frame[frame] = (matched & ~ignored).sum()
            bucket.false_by_frame[frame] = (~matched & ~ignored).sum()
            real = ~np.asarray(item["gtIgnore"], bool)
            bucket.signs_by_frame[frame] = real.sum()
            bucket.found_by_frame[frame] = ((item["gtMatches"][0] > 0) & real).sum()
            if name == "all":
                for detection_id, truth_id, skip in zip(
                    item["dtIds"], item["dtMatches"][0], ignored, strict=True
                ):
                    if truth_id > 0 and not skip:
                        pairs.append(
                            (
                                item["image_id"],
                                found.anns[detection_id]["_index"],
                                ground.anns[int(truth_id)]["_index"],
                            )
                        )
    return counts, pairs


def mask_iou(detection: Detection, truth: np.ndarray) -> float:
    """IoU of a detection's box-shaped mask with a whole-frame ground-truth mask."""
    x1, y1, x2, y2 = detection.box
    inside = truth[y1:y2, x1:x2]
    intersection = int((inside & detection.mask).sum())
    union = int(detection.mask.sum()) + int(truth.sum()) - intersection
    return intersection / union if union else 0.0


def report(
    frames: Sequence[FrameRecord],
    detections: Sequence[Sequence[Detection]],
    seconds: float | None = None,
) -> dict:
    """The numbers of the module docstring, as one JSON-ready dict."""
    counts, pairs = match(frames, detections)
    every = counts["all"]
    precision = every.true / (every.true + every.false) if every.true + every.false else None
    recall = every.found / every.signs if every.signs else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall
        else None
    )
    ious, correct, classed = [], 0, 0
    for frame_index, detection_index, truth_index in pairs:
        frame = frames[frame_index]
        detection = detections[frame_index][detection_index]
        sign = frame.instances[truth_index]
        if sign.segmentation is not None:
            ious.append(mask_iou(detection, instance_mask(sign, frame.height, frame.width)))
        if sign.class_id is not None:
            classed += 1
            correct += detection.class_id == sign.class_id
    out = {
        "frames": len(frames),
        "signs": every.signs,
        "ignored": sum(sign.ignore for frame in frames for sign in frame.instances),
        "detections": sum(len(found) for found in detections),
        "iou": IOU,
        "precision": rounded(precision),
        "recall": rounded(recall),
        "f1": rounded(f1),
        "true_positives": every.true,
        "false_positives": every.false,
        "false_negatives": every.signs - every.found,
        "false_signs_per_frame": rounded(every.false / len(frames) if frames else None),
        "at_32_px_and_more": _bar(counts[BAR], len(frames)),
        "recall_by_size": {
            name: {"recall": rounded(c.found / c.signs if c.signs else None), "signs": c.signs}
            for name, c in counts.items()
            if name != "all"
        },
        "mask_iou": rounded(float(np.mean(ious)) if ious else None),
        "mask_iou_signs": len(ious),
        "class_accuracy": rounded(correct / classed if classed else None),
        "class_accuracy_signs": classed,
    }
    if seconds is not None:
        out["seconds"] = round(seconds, 2)
        out["frames_per_s"] = rounded(len(frames) / seconds if seconds > 0 else None)
    return out


def _bar(counts: _Counts, frames: int) -> dict:
    looked = counts.true + counts.false
    return {
        "precision": rounded(counts.true / looked if looked else None),
        "recall": rounded(counts.found / counts.signs if counts.signs else None),
        "false_signs_per_frame": rounded(counts.false / frames if frames else None),
        **_bootstrap_intervals(counts),
    }


def _bootstrap_intervals(counts: _Counts, level: float = 0.95) -> dict:
    """`level` intervals of recall and false signs per frame: the frames drawn again with
    replacement (a percentile bootstrap over frames, not signs, since the signs of one frame
    are found or missed together), so that a set of 10 frames says how little it can tell."""
    frames = len(counts.signs_by_frame)
    if frames == 0:
        return {"recall_interval": None, "false_signs_per_frame_interval": None}
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, frames, (BOOTSTRAP_RESAMPLES, frames))
    signs = counts.signs_by_frame[draws].sum(axis=1)
    recalls = counts.found_by_frame[draws].sum(axis=1)[signs > 0] / signs[signs > 0]
    false_per_frame = counts.false_by_frame[draws].mean(axis=1)
    tails = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(values: np.ndarray) -> list[float] | None:
        return [rounded(v) for v in np.percentile(values, tails)] if len(values) else None

    return {
        "recall_interval": interval(recalls),
        "false_signs_per_frame_interval": interval(false_per_frame),
    }


def evaluate_folder(
    root: Path | str,
    detect: Callable[[np.ndarray], list[Detection]],
    limit: int | None = None,
) -> dict:
    """`report` for every frame of a COCO frames folder (DFG, `greedysign data scenes`);
    frames/s is the detector's alone (reading the images and a first, warm-up pass are not
    counted). Frames are read as
    stored, as their boxes describe them (data.images.read_rgb); a frame that decodes to
    another size than its entry states is a DataError naming it, since its boxes would
    score nothing, without a word."""
    frames = read_coco_frames(root)[:limit]
    if not frames:  # scores of nothing would print as nulls and exit as a success
        raise DataError(root, None, "no frames to score")
    detections, seconds = [], 0.0
    for frame in frames:
        rgb = read_rgb(frame.image_path)
        if rgb.shape[:2] != (frame.height, frame.width):
            fault = (
                f"decoded image is {rgb.shape[1]}x{rgb.shape[0]}, but {frame.source} says "
                f"{frame.width}x{frame.height}"
            )
            raise DataError(frame.image_path, None, fault)
        if not detections:
            # Untimed, as the service warms up: a first pass pays for one-off set-up (oneDNN's
            # kernels, cuDNN's algorithm search), 0.27 s against 0.18 s on a DFG frame.
            detect(rgb)
        started = time.perf_counter()
        detections.append(detect(rgb))
        seconds += time.perf_counter() - started
    return report(frames, detections, seconds)


def rounded(value: float | None) -> float | None:
    """A score as the reports print it: 4 decimals; None for none, and for NaN or an infinity
    (which JSON cannot hold)."""
    return None if value is None or not np.isfinite(value) else round(float(value), 4)
