"""Frames/s of scene detection (model/detect.py) at a dashcam frame size, stage by stage.

    .venv/bin/python bench/detect_speed.py [--scene-model FILE] [--model FILE]
        [--size 1280x720] [--long-sides 768 1024 1280] [--tile 0] [--signs 5] [--frames 5]
        [--mirror] [--[no-]bf16]

Stages, timed on the same frame: prepare (resize, normalise, pad), segment (the scene model),
instances (components, touching ones split, masks at full size), read (the crop model on
the crops found). Without --scene-model the scene model is a ResNet-18 SignNet with random
weights (the speed is the same), whose output is noise: the instances are then found in a
map of `--signs` drawn discs (two of them touching), as many as a real frame has. The frame
is a real DFG frame resized when ../shared/data is there, else noise. Prints one line per
long side and the frames/s of the whole chain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from data.classes import label_names
from data.images import read_rgb
from model.checkpoint import ModelInfo, export_model
from model.detect import (
    DetectConfig,
    SceneSegmenter,
    crop_inputs,
    find_instances,
    prepare_frame,
    stitch,
)
from model.inference import Predictor
from model.network import NetConfig, SignNet
from model.runs import resolve_model

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("GREEDYSIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help)
    parser.add_argument("--scene-model", type=Path, help="default: random ResNet-18 weights")
    parser.add_argument("--model", type=Path, help="crop model (default: resolve_model())")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="1280x720", help="frame WIDTHxHEIGHT")
    parser.add_argument("--long-sides", type=int, nargs="+", default=[768, 1024, 1280])
    parser.add_argument("--tile", type=int, default=0)
    parser.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the scene model also runs each frame mirrored (default: on with a GPU)",
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the scene model in bfloat16 on a CPU (default: where the CPU has AMX)",
    )
    parser.add_argument(
        "--signs", type=int, default=5, help="signs drawn per frame (without --scene-model)"
    )
    parser.add_argument("--frames", type=int, default=5, help="timed repetitions")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    return parser


def random_scene_model(folder: Path) -> Path:
    torch.manual_seed(0)
    config = NetConfig(num_classes=len(label_names("ctsrd")))
    info = ModelInfo(config=config, class_names=label_names("ctsrd"), task="scenes")
    return export_model(SignNet(config, with_aux=False).eval(), info, folder / "scene.pt")


def sign_map(drawn: list[tuple[int, int, int]], geometry) -> np.ndarray:
    """The [1, h, w] sign map a scene model would give for round signs at `drawn`."""
    import cv2

    (h, w), (sy, sx) = geometry.resized, geometry.scale
    probability = np.zeros((h, w), np.float32)
    for x, y, side in drawn:
        centre = (round((x + side / 2) * sx), round((y + side / 2) * sy))
        cv2.circle(probability, centre, max(1, round(side / 2 * sx)), 0.9, -1)
    return probability[None]


def test_frame(width: int, height: int) -> np.ndarray:
    import cv2

    frames = sorted((SHARED_DATA / "dfg-frames" / "images").glob("*.jpg"))
    if frames:
        return cv2.resize(read_rgb(frames[0]), (width, height), interpolation=cv2.INTER_AREA)
    return np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)


def main(args: argparse.Namespace) -> int:
    # In a worker thread, as the service's inference runs: on a CPU shared with other
    # processes, OpenMP work started from the main thread measured up to 10x slower
    # (bench/service_load.py).
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(measure, args).result()


def measure(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as folder:
        scene_path = args.scene_model or random_scene_model(Path(folder))
        segmenter = SceneSegmenter.load(scene_path, args.device, mirror=args.mirror, bf16=args.bf16)
    predictor = Predictor.load(resolve_model(args.model), segmenter.device)
    rgb = test_frame(width, height)
    rng = np.random.default_rng(0)
    drawn = []  # signs of 20-120 px anywhere in the frame, the second under the first
    largest = min(120, height // 2 - 1, width - 1)  # two stacked still fit a small frame
    for index in range(args.signs):
        side = int(rng.integers(min(20, largest), largest + 1))
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - 2 * side))
        if index == 1:
            x, y, side = drawn[0][0], drawn[0][1] + drawn[0][2], drawn[0][2]
        drawn.append((x, y, side))
    scene_name = scene_path if args.scene_model else "random ResNet-18"
    mirrored = (", mirrored" if segmenter.mirror else "") + f", {segmenter.dtype_name}"
    print(
        f"frame {width}x{height}, scene model {scene_name}{mirrored}"
        f" on {segmenter.device}, torch threads {torch.get_num_threads()}, "
        + (f"{args.signs} signs drawn, " if args.scene_model is None else "the signs it finds ")
        + f"read by {resolve_model(args.model).name}, {args.frames} frames per setting"
    )
    for long_side in args.long_sides:
        config = DetectConfig(long_side=long_side, tile=args.tile)
        times = {"prepare": [], "segment": [], "instances": [], "read": []}
        for repeat in range(args.frames + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            frame = prepare_frame(rgb, config)
            t1 = time.perf_counter()
            maps = stitch(segmenter.probabilities(frame.tensor), frame)
            if args.scene_model is None:  # random weights mark noise: draw the signs instead
                maps = sign_map(drawn, frame.geometry)
            t2 = time.perf_counter()
            found = find_instances(maps, frame.geometry, config, rgb)
            t3 = time.perf_counter()
            crops = crop_inputs(rgb, found, predictor.preprocess, config.margin)
            if crops:  # a scene model may find none at a small long side
                predictor.predict_batch(
                    torch.stack([c for c, _ in crops]), [s for _, s in crops], top_k=1
                )
            t4 = time.perf_counter()
            if repeat:
                for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    times[name].append(seconds * 1000)
        median = {name: float(np.median(values)) for name, values in times.items()}
        total = sum(median.values())
        stages = "  ".join(f"{name} {ms:6.1f}" for name, ms in median.items())
        shape = "x".join(str(v) for v in frame.tensor.shape[-2:][::-1])
        print(
            f"long side {long_side:5d} (input {shape}, {len(frame.origins)} tile(s)): "
            f"{stages} ms  = {total:6.1f} ms/frame = {1000 / total:5.2f} frames/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
