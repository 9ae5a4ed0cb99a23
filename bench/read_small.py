"""The sign model on far signs: held-out known signs shrunk to the few pixels a far sign
covers in a road frame, read as scene mode reads a region.

    .venv/bin/python bench/read_small.py [--model FILE] [--long-sides 48 32 24 16]
        [--data ../shared/data/ctsrd-real --data ../shared/data/tt100k-crops] [--every N]

Each known sign on the model's held-out side (the content hashes it records) is cut as scene
mode cuts a region, its box grown by the detection's margin (TSRD photos; a TT100K crop is
already one), shrunk with area averaging until its long side is S (never enlarged), and read
in one pass. Prints, per collection and size, the share read as the right class (after the
open-set threshold, as scene mode answers). Whether a sign in a frame is read badly because
it is small or for other reasons (the region's fit, compositing, blur) is told apart here:
only the size changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from data.images import read_rgb
from data.load import load_datasets
from data.scenes import default_data_root
from data.split import unique_by_content
from model.detect import DetectConfig
from model.inference import Predictor
from model.reading import grown
from model.runs import resolve_model

BATCH = 128


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--model", type=Path, help="sign model (default: as eval-detect)")
    parser.add_argument("--data", type=Path, action="append", help="default: TSRD and TT100K")
    parser.add_argument("--long-sides", type=int, nargs="+", default=[48, 32, 24, 16])
    parser.add_argument("--every", type=int, default=1, help="read every N-th held-out sign")
    return parser


def shrunk(rgb: np.ndarray, long_side: int | None) -> np.ndarray:
    """`rgb` shrunk to `long_side` (its longer side) by area averaging; None, or a smaller
    image: as it is."""
    height, width = rgb.shape[:2]
    scale = 1.0 if long_side is None else long_side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def read_right(predictor: Predictor, signs: list[tuple[np.ndarray, int]]) -> int:
    """How many of `signs` (crop, class id) the predictor answers with their class."""
    right = 0
    for start in range(0, len(signs), BATCH):
        chunk = signs[start : start + BATCH]
        answers = predictor.predict_images([rgb for rgb, _ in chunk], top_k=1)
        right += sum(a.class_id == label for a, (_, label) in zip(answers, chunk, strict=True))
    return right


def main(args: argparse.Namespace) -> int:
    data = args.data or [default_data_root() / "ctsrd-real", default_data_root() / "tt100k-crops"]
    model_path = resolve_model(args.model)
    predictor = Predictor.load(model_path, "cpu")
    held_out = set(predictor.info.split.get("test_sha1", ()))
    if not held_out:
        print(f"error: {model_path} records no held-out images", file=sys.stderr)
        return 2
    index = load_datasets(data)
    known = len(index.class_names)
    records = [
        r for r in unique_by_content(index.records) if r.sha1 in held_out and r.class_id < known
    ][:: args.every]
    margin = DetectConfig.margin
    by_origin: dict[str, list[tuple[np.ndarray, int]]] = {}
    for record in records:
        rgb = read_rgb(record.image_path)
        if record.box is not None:
            x1, y1, x2, y2 = grown(record.box, *rgb.shape[:2], margin)
            rgb = rgb[y1:y2, x1:x2]
        by_origin.setdefault(record.origin, []).append((rgb, record.class_id))
    print(f"{model_path}: held-out known signs read in one pass, cut with margin {margin}")
    for long_side in [None, *args.long_sides]:
        figures = []
        for origin, signs in sorted(by_origin.items()):
            small = [(shrunk(rgb, long_side), label) for rgb, label in signs]
            figures.append(
                f"{origin} {read_right(predictor, small) / len(signs):.3f} ({len(signs)})"
            )
        print(f"  long side {long_side or 'unshrunk'}: {', '.join(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
