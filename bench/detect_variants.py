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
- "reader's box at 1.0 where larger": the reader's own mask in a crop three times the
  region's width and height (margin 1.0 on each side) replaces the region when it holds the
  region and is 1.5 times its area or more (a large sign marked only in pieces: the region
  lies wholly on it).
- "+ long side S": regions found at a second, coarser long side (large signs there have the
  sizes the scene model saw most in training) added where they overlap no region of the
  first (IoU < 0.1), all read by the reader.
- "coarse over fragments": a coarse region of 96 px and more replaces the first regions
  that lie inside it (0.7 of their box) when they cover less than half of it and no other
  first region touches it: one region for a large sign the first pass marked in pieces.
- "GrabCut-grown": each region replaced by OpenCV's GrabCut in the original frame, seeded by
  the region's mask (its inside as sign, the window's rim as background) in a window three
  times the region's width and height, and read again: a large sign marked in pieces grows
  to its edges; "where 2-16x" takes the grown region only when it is 2 to 16 times the
  region's area.

Prints one line per variant: recall and false signs per frame for the bar (32 px and more),
false signs per frame of every size, mask IoU.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from data.frames import read_coco_frames
from data.images import read_rgb
from data.records import box_area, box_overlap
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

LOOSER_MARGINS = (0.3, 1.0)  # read beside the detection's own: a loose one, the region's size
SECOND_LONG_SIDE = 512
NEW_REGION_IOU = 0.1  # a coarser region overlapping a first one less than this is new
GROW_MARGIN, GROW_AREA = 1.0, 1.5  # the reader's box replaces a region it holds, this much larger
FRAGMENTS_MIN_SIDE = 96  # px: a coarse region this large may stand for the fragments inside it
FRAGMENT_INSIDE = 0.7  # share of a first region's box inside the coarse one
FRAGMENTS_COVER = 0.5  # the fragments' boxes cover less than this share of the coarse box
GRABCUT_MARGIN = 1.0  # the window: the region's box grown by its size on each side
GRABCUT_SIDE = 160  # px: the window shrunk to this long side at most (GrabCut's cost is per pixel)
GRABCUT_ITERATIONS = 3
GRABCUT_GROWTH = (2.0, 16.0)  # "where 2-16x": the grown box's area over the region's


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


def reader_margins(detector: Detector) -> tuple[float, ...]:
    """The detection's margin, then the looser ones the variants read at."""
    return (detector.config.margin, *LOOSER_MARGINS)


def read_regions(
    detector: Detector,
    rgb: np.ndarray,
    instances: list[Instance],
    margins: tuple[float, ...] | None = None,
) -> list[Read]:
    """Each region read at every margin of `margins` (default: `reader_margins`); the
    detection's own margin gives the reading that keeps or drops it."""
    if not instances:
        return []
    margins = reader_margins(detector) if margins is None else margins
    height, width = rgb.shape[:2]
    predictor = detector.predictor
    reads = [Read(i, 0.0, False, {}) for i in instances]
    for margin in margins:
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


def coarse_regions(detector: Detector, rgb: np.ndarray) -> list[Instance]:
    """The regions of the frame at SECOND_LONG_SIDE."""
    config = replace(detector.config, long_side=SECOND_LONG_SIDE)
    frame = prepare_frame(rgb, config)
    maps = stitch(detector.segmenter.probabilities(frame.tensor), frame)
    return find_instances(maps, frame.geometry, config, rgb)


def new_regions(first: list[Read], coarse: list[Read]) -> list[Read]:
    """Coarse regions that overlap no first region (IoU < NEW_REGION_IOU)."""
    if not first or not coarse:
        return coarse
    boxes = [np.array([r.instance.box for r in reads]) for reads in (coarse, first)]
    overlap = iou_matrix(*boxes)
    return [c for c, row in zip(coarse, overlap, strict=True) if row.max() < NEW_REGION_IOU]


def coarse_over_fragments(first: list[Read], coarse: list[Read]) -> list[Read]:
    """The first regions, each group of fragments of a large coarse region replaced by it."""
    replaced, added = set(), []
    for region in coarse:
        box = region.instance.box
        if max(box[2] - box[0], box[3] - box[1]) < FRAGMENTS_MIN_SIDE:
            continue
        touching = [j for j, f in enumerate(first) if box_overlap(f.instance.box, box) > 0]
        inside = [
            j
            for j in touching
            if box_overlap(first[j].instance.box, box)
            >= FRAGMENT_INSIDE * box_area(first[j].instance.box)
        ]
        cover = sum(box_area(first[j].instance.box) for j in inside) / box_area(box)
        if inside and len(inside) == len(touching) and cover < FRAGMENTS_COVER:
            replaced.update(inside)
            added.append(region)
    return [f for j, f in enumerate(first) if j not in replaced] + added


def reader_grown(read: Read) -> Read:
    """The region replaced by the reader's box at GROW_MARGIN when that box holds it and is
    GROW_AREA times its area or more."""
    if GROW_MARGIN not in read.boxes:
        return read
    box, mask = read.boxes[GROW_MARGIN]
    own = read.instance.box
    holds = box_overlap(box, own) == box_area(own)
    if not holds or box_area(box) < GROW_AREA * box_area(own):
        return read
    return replace(read, instance=Instance(box, mask, read.instance.score))


def grabcut_grown(rgb: np.ndarray, instance: Instance) -> Instance:
    """The region grown by GrabCut in a window around it (see the module docstring): the
    grown pixels connected to the region's own; the region itself when nothing is grown."""
    height, width = rgb.shape[:2]
    wx1, wy1, wx2, wy2 = grown(instance.box, height, width, GRABCUT_MARGIN)
    window_size = (wx2 - wx1, wy2 - wy1)
    scale = min(1.0, GRABCUT_SIDE / max(window_size))
    size = (max(1, round(window_size[0] * scale)), max(1, round(window_size[1] * scale)))
    window = cv2.resize(rgb[wy1:wy2, wx1:wx2], size, interpolation=cv2.INTER_AREA)
    seed = np.zeros(window_size[::-1], np.uint8)
    x1, y1, x2, y2 = instance.box
    seed[y1 - wy1 : y2 - wy1, x1 - wx1 : x2 - wx1] = instance.mask
    seed = cv2.resize(seed, size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if seed.sum() < 4 or min(size) < 8:
        return instance
    labels = np.full(seed.shape, cv2.GC_PR_BGD, np.uint8)
    labels[seed] = cv2.GC_PR_FGD
    labels[cv2.erode(seed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)] = cv2.GC_FGD
    rim = np.ones_like(seed)
    rim[1:-1, 1:-1] = False
    labels[rim & ~seed] = cv2.GC_BGD
    colour_models = np.zeros((1, 65)), np.zeros((1, 65))  # background's and sign's, learned
    bgr = np.ascontiguousarray(window[..., ::-1])  # OpenCV's channel order
    cv2.grabCut(bgr, labels, None, *colour_models, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    sign = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    components = cv2.connectedComponents(sign, connectivity=8)[1]
    own = np.isin(components, np.unique(components[seed & (sign > 0)])) & (components > 0)
    full = cv2.resize(own.astype(np.uint8), window_size, interpolation=cv2.INTER_NEAREST)
    ys, xs = np.nonzero(full)
    if len(ys) == 0:
        return instance
    gx1, gy1, gx2, gy2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    box = (wx1 + gx1, wy1 + gy1, wx1 + gx2, wy1 + gy2)
    return Instance(box, full[gy1:gy2, gx1:gx2].astype(bool), instance.score)


def grown_enough(first: Read, grabcut: Read) -> Read:
    """The GrabCut-grown region when its box is GRABCUT_GROWTH times the region's area, else
    the region."""
    low, high = GRABCUT_GROWTH
    growth = box_area(grabcut.instance.box) / box_area(first.instance.box)
    return grabcut if low <= growth <= high else first


def as_detection(read: Read, margin: float | None = None) -> Detection:
    box, mask = read.instance.box, read.instance.mask
    if margin is not None and margin in read.boxes:
        box, mask = read.boxes[margin]
    return Detection(box, mask, read.instance.score, None, "sign", "sign", 1 - read.no_sign)


def read_as_sign(read: Read) -> bool:
    """The shipped rule: kept unless the reader's most probable answer is "no sign"."""
    return not read.argmax_no_sign


def variants(margins: tuple[float, ...]) -> dict[str, tuple[Callable[[Read], bool], float | None]]:
    """name -> (keep the region?, the reader margin whose box replaces the region's)."""
    table = {"shipped": (read_as_sign, None), "no reader": (lambda read: True, None)}
    for margin in margins:
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
    first_reads, coarse_reads, grabcut_reads = [], [], []
    for frame in frames:
        rgb = read_rgb(frame.image_path)
        instances = detector.instances(rgb)
        first_reads.append(read_regions(detector, rgb, instances))
        grabcut = [grabcut_grown(rgb, instance) for instance in instances]
        grabcut_reads.append(read_regions(detector, rgb, grabcut, (detector.config.margin,)))
        # Coarse regions are only kept or dropped: the detection's margin is all they need.
        coarse = coarse_regions(detector, rgb)
        coarse_reads.append(read_regions(detector, rgb, coarse, (detector.config.margin,)))
    rows = {
        name: [[as_detection(r, margin) for r in reads if keep(r)] for reads in first_reads]
        for name, (keep, margin) in variants(reader_margins(detector)).items()
    }
    rows[f"reader's box at {GROW_MARGIN} where larger"] = [
        [as_detection(reader_grown(r)) for r in reads if read_as_sign(r)] for reads in first_reads
    ]
    pairs = list(zip(first_reads, coarse_reads, strict=True))
    rows[f"+ long side {SECOND_LONG_SIDE}"] = [
        [as_detection(r) for r in first + new_regions(first, coarse) if read_as_sign(r)]
        for first, coarse in pairs
    ]
    rows["coarse over fragments"] = [
        [as_detection(r) for r in coarse_over_fragments(first, coarse) if read_as_sign(r)]
        for first, coarse in pairs
    ]
    rows["GrabCut-grown"] = [
        [as_detection(r) for r in reads if read_as_sign(r)] for reads in grabcut_reads
    ]
    rows["GrabCut-grown where 2-16x"] = [
        [as_detection(r) for r in map(grown_enough, first, grabcut) if read_as_sign(r)]
        for first, grabcut in zip(first_reads, grabcut_reads, strict=True)
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
