"""What could be done after the region step, measured: each variant of scene mode's last steps
is scored exactly as `greedysign eval-detect` scores the shipped one.

    .venv/bin/python bench/detect_variants.py --data runs/scenes-val-dfg \
        [--scene-model FILE] [--model FILE] [--limit N]

Every frame is searched once (the shipped DetectConfig) and every region read once; the
variants reuse those answers:

- "shipped": a region is dropped when the reader's most probable answer is "no sign".
- "no reader": every region kept (the region step's own recall and false signs).
- "reader's box, margin M": the region's box and mask replaced by those of the reader's own
  mask (its segmentation head, box IoU 89 % on photos) in the crop cut with margin M.
- "P(no sign) < T": a region dropped when the reader gives "no sign" probability T or more.
- "score x P(sign) > T": kept when the region's mean sign probability times the reader's
  1 - P(no sign) exceeds T.
- "+ long side S": regions found at a second, coarser long side (large signs there have the
  sizes the scene model saw most in training) added where they overlap no region of the
  first (IoU < 0.1), all read by the reader.

Prints one line per variant: recall and false signs per frame for the bar (32 px and more),
false signs per frame of every size, mask IoU.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from data.frames import read_coco_frames
from data.images import read_rgb
from model.detect import (
    SHIPPED_SCENE_MODEL,
    Detection,
    Detector,
    Instance,
    crop_inputs,
    find_instances,
    prepare_frame,
    stitch,
)
from model.detect_eval import report
from model.inference import NO_SIGN
from model.reading import grown
from model.runs import resolve_model
from model.track import iou_matrix

READER_MARGINS = (0.15, 0.3)  # the detection's margin, and a loose one
SECOND_LONG_SIDE = 512
NEW_REGION_IOU = 0.1  # a coarser region overlapping a first one less than this is new


@dataclass
class Read:
    """One region with what the reader said of it at each margin."""

    instance: Instance
    no_sign: float  # P(no sign) at the detection's margin
    argmax_no_sign: bool
    boxes: dict[float, tuple]  # margin -> (box, box-shaped mask) of the reader's own mask


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--data", type=Path, required=True, help="a COCO frames folder")
    parser.add_argument("--scene-model", type=Path, default=SHIPPED_SCENE_MODEL)
    parser.add_argument("--model", type=Path, help="sign model (default: as eval-detect)")
    parser.add_argument("--limit", type=int)
    return parser


def read_regions(detector: Detector, rgb: np.ndarray, instances: list[Instance]) -> list[Read]:
    """Each region read at every margin of READER_MARGINS (the first is the detection's)."""
    if not instances:
        return []
    height, width = rgb.shape[:2]
    predictor = detector.predictor
    reads = [Read(i, 0.0, False, {}) for i in instances]
    for margin in READER_MARGINS:
        crops = crop_inputs(rgb, instances, predictor.preprocess, margin)
        batch = torch.stack([tensor for tensor, _ in crops])
        predictions = predictor.predict_batch(batch, [size for _, size in crops], top_k=1)
        if margin == detector.config.margin:
            # The answers carry only the winner's probability; the gates need P(no sign).
            with torch.inference_mode():
                logits, _ = predictor.model(batch)
            no_sign = logits.float().softmax(dim=1)[:, -1].tolist()
            for read, prediction, probability in zip(reads, predictions, no_sign, strict=True):
                read.no_sign = probability
                read.argmax_no_sign = prediction.kind == NO_SIGN
        for read, prediction in zip(reads, predictions, strict=True):
            if prediction.box is None:
                continue
            ox, oy = grown(read.instance.box, height, width, margin)[:2]
            x1, y1, x2, y2 = prediction.box
            box = (ox + x1, oy + y1, ox + x2, oy + y2)
            read.boxes[margin] = (box, prediction.mask[y1:y2, x1:x2])
    return reads


def coarse_regions(detector: Detector, rgb: np.ndarray, first: list[Instance]) -> list[Instance]:
    """Regions at SECOND_LONG_SIDE that overlap none of `first`."""
    config = replace(detector.config, long_side=SECOND_LONG_SIDE)
    frame = prepare_frame(rgb, config)
    maps = stitch(detector.segmenter.probabilities(frame.tensor), frame)
    more = find_instances(maps, frame.geometry, config)
    if not first or not more:
        return more
    overlap = iou_matrix(np.array([m.box for m in more]), np.array([f.box for f in first]))
    return [m for m, row in zip(more, overlap, strict=True) if row.max() < NEW_REGION_IOU]


def as_detection(read: Read, margin: float | None = None) -> Detection:
    box, mask = read.instance.box, read.instance.mask
    if margin is not None and margin in read.boxes:
        box, mask = read.boxes[margin]
    return Detection(box, mask, read.instance.score, None, "sign", "sign", 1 - read.no_sign)


def read_as_sign(read: Read) -> bool:
    """The shipped rule: kept unless the reader's most probable answer is "no sign"."""
    return not read.argmax_no_sign


def variants() -> dict[str, tuple[Callable[[Read], bool], float | None]]:
    """name -> (keep the region?, the reader margin whose box replaces the region's)."""
    table = {"shipped": (read_as_sign, None), "no reader": (lambda read: True, None)}
    for margin in READER_MARGINS:
        table[f"reader's box, margin {margin}"] = (read_as_sign, margin)
    for limit in (0.2, 0.3, 0.4):
        table[f"P(no sign) < {limit}"] = ((lambda t: lambda r: r.no_sign < t)(limit), None)
    for limit in (0.3, 0.4, 0.5, 0.6):
        keep = (lambda t: lambda r: r.instance.score * (1 - r.no_sign) > t)(limit)
        table[f"score x P(sign) > {limit}"] = (keep, None)
    return table


def main(args: argparse.Namespace) -> int:
    detector = Detector.load(args.scene_model, resolve_model(args.model), "cpu")
    frames = read_coco_frames(args.data)[: args.limit]
    first_reads, coarse_reads = [], []
    for frame in frames:
        rgb = read_rgb(frame.image_path)
        instances = detector.instances(rgb)
        first_reads.append(read_regions(detector, rgb, instances))
        coarse_reads.append(read_regions(detector, rgb, coarse_regions(detector, rgb, instances)))
    rows = {
        name: [[as_detection(r, margin) for r in reads if keep(r)] for reads in first_reads]
        for name, (keep, margin) in variants().items()
    }
    rows[f"+ long side {SECOND_LONG_SIDE}"] = [
        [as_detection(r) for r in first + more if read_as_sign(r)]
        for first, more in zip(first_reads, coarse_reads, strict=True)
    ]
    print(f"{args.data} ({len(frames)} frames): bar recall, bar false/frame, all false/frame")
    for name, detections in rows.items():
        result = report(frames, detections)
        bar = result["at_32_px_and_more"]
        print(
            f"  {name:28s} {bar['recall']:.2f}  {bar['false_signs_per_frame']:.2f}  "
            f"{result['false_signs_per_frame']:.2f}  mask IoU {result['mask_iou']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
