"""Tracker settings, measured: each variant follows the same detections through annotated
videos and is scored exactly as `greedysign eval-track` scores the shipped tracker.

    .venv/bin/greedysign data drives runs/drives-val --drives 8 --seed 7
    .venv/bin/python bench/track_variants.py --data runs/drives-val \
        [--scene-model FILE] [--model FILE] [--limit N]

Every frame is searched once (the shipped DetectConfig, the shipped pair unless told); the
variants reuse those detections:

- "shipped": `Tracker()` as `greedysign detect` and the service build it;
- "max age A", "IoU I", "max distance D": how long a track waits for its sign, the overlap
  that pairs a detection with a track, and the distance (in box sides) of the second pass;
- "shown from hit H": a detection is shown only once its track has been matched in H
  frames (SORT's min_hits): fewer short false tracks, signs shown H - 1 frames later.

Prints one line per variant: MOTA, IDF1, identity switches, fragmentations, recall,
precision, false tracks per video, and the class shown (each detection's own reading, and its
track's vote in that frame) against the true class.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from data.frames import read_coco_frames
from data.images import read_rgb
from model.detect import SHIPPED_SCENE_MODEL, Detector
from model.runs import resolve_model
from model.track import Tracker
from model.track_eval import follow, score, videos_of


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--data", type=Path, required=True, help="COCO frames folder of videos")
    parser.add_argument("--scene-model", type=Path, default=SHIPPED_SCENE_MODEL)
    parser.add_argument("--model", type=Path, help="sign model (default: as eval-track)")
    parser.add_argument("--limit", type=int, help="only the first N videos")
    return parser


def variants() -> list[tuple[str, Callable[[], Tracker], int]]:
    """(name, tracker factory, first hit shown)."""
    return [
        ("shipped", Tracker, 1),
        *[(f"max age {a}", lambda a=a: Tracker(max_age=a), 1) for a in (2, 10)],
        ("IoU 0.3", lambda: Tracker(iou_threshold=0.3), 1),
        *[(f"max distance {d:g}", lambda d=d: Tracker(max_distance=d), 1) for d in (1, 4)],
        *[(f"shown from hit {h}", Tracker, h) for h in (2, 3)],
    ]


def main(args: argparse.Namespace) -> int:
    torch.set_grad_enabled(False)
    detector = Detector.load(args.scene_model, resolve_model(args.model), device="cpu")
    videos = videos_of(read_coco_frames(args.data))[: args.limit]
    detections = [
        [detector.detect(read_rgb(frame.image_path)) for frame in frames] for frames in videos
    ]
    print(f"{args.data}: {len(videos)} videos, {sum(map(len, videos))} frames")
    for name, make_tracker, first_hit in variants():
        shown = [follow(found, make_tracker(), first_hit) for found in detections]
        r = score(videos, shown)
        print(
            f"{name:20s} MOTA {r['mota']:.3f}  IDF1 {r['idf1']:.3f}  switches {r['id_switches']}"
            f"  fragmentations {r['fragmentations']}  recall {r['recall']:.3f}"
            f"  precision {r['precision']:.3f}"
            f"  false tracks/video {r['false_tracks_per_video']:.2f}"
            f"  class: detection {r['class_accuracy']['detection']:.3f}"
            f" track {r['class_accuracy']['track']:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
