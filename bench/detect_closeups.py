"""Scene mode on photos of one sign: is the sign still found when a small frame is enlarged?

    .venv/bin/python bench/detect_closeups.py [--data ../shared/data/ctsrd-real] [--every 10]
        [--max-upscales 1 1.5 2 2.5 8]

A frame smaller than the working size is enlarged toward it by at most `max_upscale`
(model/detect.py): that brings the signs of a low-resolution dashcam frame to the sizes the
scene model learned, but a photo that one sign fills (a TSRD photo, about 130 px) enlarged
eightfold is a sign far larger than any it saw. Each max_upscale runs scene mode (the
shipped scene model, the sign model as eval-detect takes it) on every `--every`-th photo of a
TSRD plain folder and counts the photos whose annotated sign a detection matches at IoU 0.5,
and those with any detection at all.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from data.images import read_rgb
from data.scenes import default_data_root
from data.sign_cutouts import read_tsrd_boxes
from model.detect import SHIPPED_SCENE_MODEL, Detector
from model.runs import resolve_model
from model.track import iou_matrix

IOU = 0.5


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--data", type=Path, default=default_data_root() / "ctsrd-real")
    parser.add_argument("--every", type=int, default=10, help="read every N-th photo")
    parser.add_argument("--max-upscales", type=float, nargs="+", default=[1, 1.5, 2, 2.5, 8])
    parser.add_argument("--scene-model", type=Path, default=SHIPPED_SCENE_MODEL)
    parser.add_argument("--model", type=Path, help="sign model (default: as eval-detect)")
    return parser


def main(args: argparse.Namespace) -> int:
    if not (args.data / "annotations.txt").is_file():
        print(f"error: no TSRD plain folder at {args.data}", file=sys.stderr)
        return 2
    photos = read_tsrd_boxes(args.data)[:: args.every]
    detector = Detector.load(args.scene_model, resolve_model(args.model), "cpu")
    frames = [(read_rgb(path), box) for path, box, _ in photos]
    print(f"{args.data}: {len(frames)} photos, scene mode at long side {detector.config.long_side}")
    config = detector.config
    for max_upscale in args.max_upscales:
        detector.config = replace(config, max_upscale=max_upscale)
        found = detected = 0
        for rgb, box in frames:
            boxes = [detection.box for detection in detector.detect(rgb)]
            detected += bool(boxes)
            found += bool(boxes) and iou_matrix(np.array([box]), np.array(boxes)).max() >= IOU
        print(f"  max_upscale {max_upscale:g}: sign found in {found}, any detection in {detected}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
