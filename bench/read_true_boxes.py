"""The sign model on the true boxes of generated frames: how well it reads each sign when
the region fits exactly, by where the sign came from and by size.

    .venv/bin/python bench/read_true_boxes.py --data runs/drives-val-ho [--model FILE]
        [--every N] [--margin M] [--worst 5]

Each sign of a frames folder written by `greedysign data scenes|drives` (not `ignore`) is cut
at its annotated box grown by the detection's margin (or `--margin`) and read in one pass, as
scene mode reads a region. A sign is read right when the answer is its class, or "unknown
sign" for a sign of no CTSRD class (as `greedysign eval-track` scores the class shown). Beside the
figures of `eval-track`, which read the detected regions, this tells what the region's fit
costs; beside `bench/read_small.py` (photos shrunk), what compositing a sign into a frame
costs (scene mode drops a region answered "no sign", so eval-track scores only the signs
answered otherwise: their count is printed beside). Prints the share read right per source
collection and size band (longer box side), then the source images with the most misreads.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from data.frames import read_coco_frames
from data.images import read_rgb
from model.detect import DetectConfig
from model.inference import NO_SIGN, Predictor
from model.reading import grown
from model.runs import resolve_model

SIZE_BANDS = (24, 48, 96)  # px: bands <24, 24-48, 48-96, >=96 of the longer box side


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--data", type=Path, required=True, help="generated COCO frames")
    parser.add_argument("--model", type=Path, help="sign model (default: as eval-detect)")
    parser.add_argument("--every", type=int, default=1, help="read every N-th frame")
    parser.add_argument(
        "--margin", type=float, default=DetectConfig.margin, help="default: scene mode's"
    )
    parser.add_argument("--worst", type=int, default=5, help="source images to list")
    return parser


def size_band(box: tuple[int, int, int, int]) -> str:
    side = max(box[2] - box[0], box[3] - box[1])
    lower = 0
    for edge in SIZE_BANDS:
        if side < edge:
            return f"{lower}-{edge} px"
        lower = edge
    return f">={lower} px"


def main(args: argparse.Namespace) -> int:
    model_path = resolve_model(args.model)
    predictor = Predictor.load(model_path, "cpu")
    margin = args.margin
    read, right, no_sign, misread = Counter(), Counter(), Counter(), Counter()
    for frame in read_coco_frames(args.data)[:: args.every]:
        signs = [sign for sign in frame.instances if not sign.ignore]
        if not signs:
            continue
        rgb = read_rgb(frame.image_path)
        height, width = rgb.shape[:2]
        crops = []
        for sign in signs:
            x1, y1, x2, y2 = grown(sign.box, height, width, margin)
            crops.append(np.ascontiguousarray(rgb[y1:y2, x1:x2]))
        for sign, answer in zip(signs, predictor.predict_images(crops, top_k=1), strict=True):
            collection = sign.source.split(":")[0] or "unsaid"
            is_right = answer.kind != NO_SIGN and answer.class_id == sign.class_id
            for key in ("all", collection, f"{collection} {size_band(sign.box)}"):
                read[key] += 1
                right[key] += is_right
                no_sign[key] += answer.kind == NO_SIGN
            if not is_right:
                misread[sign.source] += 1
    if not read:
        print(f"error: no sign to read in {args.data}", file=sys.stderr)
        return 2
    print(f"{model_path} on the true boxes of {args.data} (margin {margin}, one pass)")
    for key in sorted(read, key=lambda key: (key != "all", key)):
        print(
            f"  {key:22s} {right[key] / read[key]:.3f} of {read[key]}"
            f" (answered no sign: {no_sign[key]})"
        )
    print(f"  misreads {read['all'] - right['all']}; the source images with most:")
    for source, count in misread.most_common(args.worst):
        print(f"    {count:4d}  {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
