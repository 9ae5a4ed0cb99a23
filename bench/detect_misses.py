"""Why signs are missed: each annotated sign of 32 px and more (not `ignore`) against the
regions the scene model marks, before they are read (the reader's "no sign" is not applied).

    .venv/bin/python bench/detect_misses.py --data runs/dfg-split/train \
        [--scene-model FILE] [--no-split-touching] [--no-require-core] [--no-part-boards]
        [--min-solidity S] [--long-side PX] [--mirror]

A sign is "found" when a region matches it at IoU 0.5; else "merged" when a region holding
half of its box also holds half of another sign's box (signs that touch, marked as one),
"loose" when some region overlaps it, and "not marked" when none does. Prints the counts,
and for frames from `greedysign data scenes` the counts by the kind of background each sign
was pasted on (video, negatives, dfg, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from data.frames import ANNOTATIONS, read_coco_frames
from data.images import read_rgb
from data.records import Box, box_area, box_overlap
from model.detect import (
    SHIPPED_SCENE_MODEL,
    DetectConfig,
    SceneSegmenter,
    find_instances,
    prepare_frame,
    stitch,
)
from model.track import iou_matrix

MIN_SIDE = 32  # the bar's range: signs whose longer box side is this or more


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--data", type=Path, required=True, help="a COCO frames folder")
    parser.add_argument("--scene-model", type=Path, default=SHIPPED_SCENE_MODEL)
    parser.add_argument("--split-touching", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--require-core", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--part-boards", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--min-solidity", type=float, default=DetectConfig.min_solidity)
    parser.add_argument("--long-side", type=int, default=DetectConfig.long_side)
    parser.add_argument("--mirror", action="store_true", help="average with the mirrored frame")
    return parser


def why_missed(sign: Box, signs: list[Box], regions: list[Box]) -> str:
    """ "found", "merged", "loose" or "not marked" (see the module docstring)."""
    if regions and iou_matrix(np.array([sign]), np.array(regions)).max() >= 0.5:
        return "found"
    holding = [r for r in regions if box_overlap(sign, r) >= 0.5 * box_area(sign)]
    for region in holding:
        if sum(box_overlap(other, region) >= 0.5 * box_area(other) for other in signs) >= 2:
            return "merged"
    if any(box_overlap(sign, region) for region in regions):
        return "loose"
    return "not marked"


def background_kinds(data: Path) -> dict[int, str]:
    """Image id -> the kind of background (the part of "background" before ":") of a set
    written by `greedysign data scenes`; empty for other COCO sets."""
    path = data / ANNOTATIONS if data.is_dir() else data
    images = json.loads(path.read_text())["images"]
    return {
        image["id"]: image["background"].split(":")[0] for image in images if "background" in image
    }


def main(args: argparse.Namespace) -> int:
    config = DetectConfig(
        long_side=args.long_side,
        split_touching=args.split_touching,
        require_core=args.require_core,
        part_boards=args.part_boards,
        min_solidity=args.min_solidity,
    )
    segmenter = SceneSegmenter.load(args.scene_model, "cpu", mirror=args.mirror)
    frames = read_coco_frames(args.data)  # checked before the backgrounds are looked up
    kinds_of = background_kinds(args.data)
    counts: Counter[str] = Counter()
    by_background: dict[str, Counter[str]] = {}
    for frame in frames:
        rgb = read_rgb(frame.image_path)
        prepared = prepare_frame(rgb, config)
        maps = stitch(segmenter.probabilities(prepared.tensor), prepared)
        regions = [i.box for i in find_instances(maps, prepared.geometry, config, rgb)]
        signs = [
            s.box
            for s in frame.instances
            if not s.ignore and max(s.box[2] - s.box[0], s.box[3] - s.box[1]) >= MIN_SIDE
        ]
        answers = [why_missed(sign, signs, regions) for sign in signs]
        counts.update(answers)
        if frame.image_id in kinds_of:
            by_background.setdefault(kinds_of[frame.image_id], Counter()).update(answers)
    total = sum(counts.values())
    kinds = ("found", "merged", "loose", "not marked")
    print(f"{args.data}: {total} signs of {MIN_SIDE} px and more, regions of {args.scene_model}")
    print(", ".join(f"{kind} {counts[kind]}" for kind in kinds))
    for background, answers in sorted(by_background.items()):
        print(f"  on {background}: " + ", ".join(f"{kind} {answers[kind]}" for kind in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
