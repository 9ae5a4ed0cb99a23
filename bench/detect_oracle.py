"""The ceiling of finding signs from a mask: each annotated frame's true sign mask stands in
for the scene model's output, shrunk to the working size as the model would see it, and
instances, boxes and masks are then found and scored exactly as `greedysign eval-detect`
does. What is lost here (signs merged with a neighbour, small signs shrunk away, masks
coarsened) no scene model can win back, so it measures the working size (--long-sides) and
splitting touching signs (--split-touching) before any model error.

    .venv/bin/python bench/detect_oracle.py [--data ../shared/data/dfg-frames]
        [--long-sides 640 768 1024 1280] [--gap 2] [--cores]

`--gap N` removes N px on both sides of every border between two signs from the true mask:
what a scene model trained on such targets (touching signs kept apart by a thin line of
background) would give, and the ceiling that training change would reach. `--cores` adds
the true sign cores (data/tiles.py) as the second map, as a scene model that draws cores
gives it: "split on" then parts components between cores, not at necks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from data.frames import read_coco_frames
from data.tiles import core_mask, sign_owners
from model.detect import DetectConfig, Detection, find_instances, frame_geometry
from model.detect_eval import report

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("GREEDYSIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "dfg-frames")
    parser.add_argument("--long-sides", type=int, nargs="+", default=[640, 768, 1024, 1280])
    parser.add_argument("--limit", type=int)
    parser.add_argument(
        "--max-upscale", type=float, default=DetectConfig.max_upscale, help="enlarge small frames"
    )
    parser.add_argument("--gap", type=int, default=0, help="px of background between signs")
    parser.add_argument("--cores", action="store_true", help="the true cores as second map")
    return parser


def oracle_detections(
    frame, config: DetectConfig, gap: int = 0, cores: bool = False
) -> list[Detection]:
    ids = sign_owners(frame)
    truth = (ids > 0).astype(np.float32)
    if gap:  # a pixel within `gap` of another sign's pixel is background
        kernel = np.ones((2 * gap + 1, 2 * gap + 1), np.uint8)
        highest = cv2.dilate(ids, kernel)
        lowest = -cv2.dilate(-np.where(ids > 0, ids, np.float32(1e6)), kernel)
        truth[(ids > 0) & ((highest != ids) | (lowest != ids))] = 0
    geometry = frame_geometry(frame.height, frame.width, config)
    h, w = geometry.resized
    maps = [truth, core_mask(ids)] if cores else [truth]
    shrunk = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA) for m in maps])
    return [
        Detection(i.box, i.mask, i.score, None, "sign", "sign", 1.0)
        for i in find_instances(shrunk, geometry, config)
    ]


def main(args: argparse.Namespace) -> int:
    frames = read_coco_frames(args.data)[: args.limit]
    signs = sum(not s.ignore for f in frames for s in f.instances)
    gap = f", {args.gap} px between touching signs" if args.gap else ""
    gap += ", true cores" if args.cores else ""
    print(f"{args.data}: {len(frames)} frames, {signs} signs (true masks{gap} as the output)")
    for long_side in args.long_sides:
        for split in (False, True):
            config = DetectConfig(
                long_side=long_side, split_touching=split, max_upscale=args.max_upscale
            )
            found = [oracle_detections(f, config, args.gap, args.cores) for f in frames]
            result = report(frames, found)
            sizes = result["recall_by_size"]
            small = sizes["small (<32)"]["recall"]
            print(
                f"long side {long_side:5d} split {'on ' if split else 'off'}: "
                f"recall {result['recall']:.3f} (>=32 px {sizes['32 and more']['recall']:.3f}, "
                f"<32 px {'none' if small is None else f'{small:.3f}'}), precision "
                f"{result['precision']:.3f}, false/frame {result['false_signs_per_frame']:.2f}, "
                f"mask IoU {result['mask_iou']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
