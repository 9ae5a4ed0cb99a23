"""`greedysign detect PATH...` (every sign in road frames: images, or a video with tracking and
an annotated copy), `greedysign eval-detect --data FOLDER` (precision, recall, F1) and
`greedysign eval-track --data FOLDER` (MOTA, IDF1 of the tracks through videos)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from contextlib import closing, suppress
from dataclasses import asdict
from pathlib import Path

from app.commands.arguments import DEVICE_HELP, comma_list, folders_opened
from app.commands.data import SCENE_BACKGROUNDS
from data.records import DataError
from model.options import device_name, non_negative_number, positive_int, positive_number
from model.runs import folder_fault

KNOWN_COLOR = (255, 210, 31)  # RGB, as the web app draws a sign of a known class
UNKNOWN_COLOR = (200, 200, 200)
MASK_COLOR = (60, 255, 130)
# The annotated copy's rate when neither --fps nor the stream gives one.
FALLBACK_FPS = 25.0


def register(commands: argparse._SubParsersAction) -> None:
    detect = commands.add_parser(
        "detect",
        help="find every sign in whole road frames (images, or a video: tracked, annotated)",
        description="The scene model marks the sign pixels of each frame; each region is cut "
        "from the original with a margin and read by the sign model. An image: one line of "
        "text (--json: one JSON line). A video: its signs are tracked from frame to frame; "
        "--json prints one JSON line per frame, with track ids, then a JSON summary line; "
        "without --json only that summary is printed, on stderr. --out writes a copy of the "
        "video with every sign drawn on it.",
    )
    detect.add_argument(
        "paths",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="images, a video, or folders of them (their images and videos, by name)",
    )
    detect.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per image, or per frame of a video then its summary (without it: "
        "a line of text per image, a video's summary alone, on stderr)",
    )
    detect.add_argument("--out", type=Path, help="video: write the annotated video here (mp4)")
    detect.add_argument(
        "--fps",
        type=positive_number,
        help="video: frames per second to read (default: every frame); the annotated copy "
        "plays at this rate, or at the video's own if that is lower",
    )
    _add_model_options(detect)
    detect.set_defaults(handler=run_detect)

    evaluate = commands.add_parser(
        "eval-detect",
        help="precision, recall and F1 of scene detection on annotated frames (JSON)",
        description="Class-agnostic matching at IoU 0.5 (pycocotools); signs marked ignore "
        "neither count nor penalise. Prints one JSON object: precision, recall, F1, recall by "
        "size (longer box side), false signs per frame, mask IoU, frames/s.",
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        required=True,
        help="COCO frames folder: ../shared/data/dfg-frames or one from greedysign data scenes",
    )
    evaluate.add_argument("--limit", type=positive_int, help="only the first N frames")
    _add_model_options(evaluate)
    evaluate.set_defaults(handler=run_eval_detect)

    follow = commands.add_parser(
        "eval-track",
        help="how well scene mode follows signs through annotated videos: MOTA, IDF1 (JSON)",
        description="Each video of a COCO frames folder with video fields (greedysign data "
        "drives writes one) is searched frame by frame and tracked as detect does a video; "
        "motmetrics scores the tracks against the true ones at IoU 0.5 (signs marked ignore "
        "neither count nor penalise). Prints one JSON object: MOTA, IDF1, identity switches, "
        "fragmentations, mostly tracked and lost, false tracks per video, and the class shown "
        "(each detection's own and its track's vote) against the true one.",
    )
    follow.add_argument(
        "--data", type=Path, required=True, help="COCO frames folder of videos (data drives)"
    )
    follow.add_argument("--limit", type=positive_int, help="only the first N videos")
    _add_model_options(follow)
    follow.set_defaults(handler=run_eval_track)

    negatives = commands.add_parser(
        "mine-negatives",
        help="crops of what the scene model marks away from signs, as 'no sign'",
        description="Runs the scene model over a video's frames past --skip-seconds (frames "
        "with no sign), or over a COCO frames folder that marks every sign (regions that "
        "overlap no marked sign), and writes every such region among the 20 best-scoring of "
        "its frame, cut as detection cuts it, as a 'no sign' crop in the crops layout "
        "(OUT/negative/, OUT/classes.csv): add OUT to the sign model's --train-data.",
    )
    negatives.add_argument("source", type=Path, help="a video, or a COCO frames folder")
    negatives.add_argument(
        "--out", type=Path, required=True, help="crops folder to write (OUT/negative/, ...)"
    )
    negatives.add_argument(
        "--skip-seconds",
        type=non_negative_number,
        default=6.0,
        help="a video's first seconds, which hold signs, are left out",
    )
    negatives.add_argument(
        "--step", type=positive_int, default=1, help="every N-th frame (at least 1)"
    )
    negatives.add_argument(
        "--signs",
        action="store_true",
        help="with a COCO frames folder: also write every sign it marks, cut at a tight, a "
        "middle and a loose margin (5, 15, 30 %%), as a sign crop (OUT/sign/: 'unknown sign', "
        "or the CTSRD class the annotation gives), so that the reader learns what to keep on "
        "those frames as well as what to refuse",
    )
    negatives.add_argument(
        "--no-sign-backgrounds",
        type=comma_list,
        metavar="KINDS",
        help=f"with a generated scenes folder: cut 'no sign' crops only from the frames drawn "
        f"on these backgrounds (comma-separated, of {','.join(SCENE_BACKGROUNDS)}); a "
        "painted-out DFG frame still holds signs DFG does not mark, far ones and backs of "
        "signs. --signs still writes the signs of every frame",
    )
    _add_model_options(negatives)
    negatives.set_defaults(handler=run_mine_negatives)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scene-model",
        type=Path,
        help="scene model (task scenes; default: the shipped one, if the package has it)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="sign model that reads each crop (default: newest run, else the shipped one)",
    )
    parser.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--long-side", type=int, default=1024, help="frames resized to this longer side (px)"
    )
    parser.add_argument("--tile", type=int, default=0, help="tile side (0: whole frames)")
    parser.add_argument("--threshold", type=float, default=0.5, help="sign probability")
    parser.add_argument(
        "--split-touching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="part signs that touch (stacked on one pole): between their cores, or at their "
        "neck for a scene model without cores (default: on)",
    )
    parser.add_argument(
        "--require-core",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with a scene model that draws cores, drop regions without one (default: on)",
    )
    parser.add_argument(
        "--part-boards",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="part a region of direction boards stacked flush at the seams the frame shows "
        "between them (default: on)",
    )
    parser.add_argument(
        "--min-solidity",
        type=float,
        default=0.75,
        help="drop a region whose mask fills less than this share of its convex hull: signs "
        "are convex, many false regions ragged (0: keep every shape; default 0.75)",
    )
    parser.add_argument(
        "--mirror",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run each frame mirrored and average: fewer false signs for twice the scene "
        "model's time (default: on with a GPU, off on a CPU)",
    )
    parser.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the scene model in bfloat16 on a CPU: about 2x faster on one with AMX "
        "(Xeon 4th generation and later), slower on one without (default: on where the CPU "
        "has AMX; a GPU runs float16 anyway)",
    )
    parser.add_argument(
        "--read-margin",
        type=float,
        default=0.1,
        help="each region is read cut from the frame with this share of its width and height "
        "added on each side (default 0.1)",
    )
    parser.add_argument(
        "--max-upscale",
        type=float,
        default=1.5,
        help="a frame smaller than --long-side is enlarged toward it by at most this factor "
        "(1: never; default 1.5)",
    )


def _load_detector(args: argparse.Namespace):
    """The Detector, or an error line and None."""
    from model.checkpoint import ModelFileError
    from model.detect import SHIPPED_SCENE_MODEL, DetectConfig, Detector
    from model.runs import resolve_model

    try:
        config = DetectConfig(
            long_side=args.long_side,
            tile=args.tile,
            threshold=args.threshold,
            split_touching=args.split_touching,
            require_core=args.require_core,
            part_boards=args.part_boards,
            min_solidity=args.min_solidity,
            max_upscale=args.max_upscale,
            margin=args.read_margin,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    scene_model = args.scene_model
    if scene_model is None:
        if not SHIPPED_SCENE_MODEL.is_file():
            print(
                "error: no scene model: give --scene-model FILE (a model trained with "
                "`greedysign train --task scenes`)",
                file=sys.stderr,
            )
            return None
        scene_model = SHIPPED_SCENE_MODEL
    try:
        return Detector.load(
            scene_model,
            resolve_model(args.model),
            args.device,
            config,
            mirror=args.mirror,
            bf16=args.bf16,
        )
    except (FileNotFoundError, ModelFileError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None


def _sign(detection, track=None) -> dict:
    sign = {
        "box": list(detection.box),
        "class_id": detection.class_id,
        "class_name": detection.class_name,
        "kind": detection.kind,
        "confidence": round(detection.confidence, 4),
        "score": round(detection.score, 4),
    }
    if track is not None:
        kind, class_id, class_name, confidence = track.label
        sign.update(
            track_id=track.track_id,
            kind=kind,
            class_id=class_id,
            class_name=class_name,
            confidence=round(confidence, 4),
        )
    return sign


def run_detect(args: argparse.Namespace) -> int:
    from data.images import MAX_USER_PIXELS, image_suffixes, read_rgb

    args.paths = folders_opened(
        args.paths, lambda path: path.suffix.lower() in image_suffixes() or _is_video(path)
    )
    videos = [path for path in args.paths if path.is_file() and _is_video(path)]
    if args.out is not None and (len(videos) != 1 or len(args.paths) != 1):
        print("error: --out writes the annotated copy of one video: give one", file=sys.stderr)
        return 2
    fault = None if args.out is None else _annotated_copy_fault(args.out, args.paths)
    if fault is not None:
        print(f"error: --out {args.out}: {fault}", file=sys.stderr)
        return 2
    detector = _load_detector(args)
    if detector is None:
        return 2
    failures = 0
    for path in args.paths:
        if path in videos:
            failures += _detect_video(detector, path, args)
            continue
        if path.is_dir():  # left by folders_opened: none of its own files is a frame
            _print_failure("image", path, "a folder with no image or video in it", args.json)
            failures += 1
            continue
        try:
            # A user's photo, upright as the service reads it.
            rgb = read_rgb(path, upright=True, max_pixels=MAX_USER_PIXELS)
        except DataError as error:
            _print_failure("image", path, str(error), args.json)
            failures += 1
            continue
        signs = [_sign(d) for d in detector.detect(rgb)]
        if args.json:
            print(json.dumps({"image": str(path), "signs": signs}), flush=True)
        else:
            found = ", ".join(
                f"{s['class_name']} {s['confidence']:.0%} at {s['box']}" for s in signs
            )
            count = f"{len(signs)} sign{'s' * (len(signs) != 1)}"
            print(f"{path}: {count}: {found}" if found else f"{path}: {count}")
    return 1 if failures else 0


def _print_failure(kind: str, path: Path, message: str, as_json: bool) -> None:
    """One input that could not be read: a JSON line among the others with --json, else a
    line on stderr beside the readable lines on stdout."""
    if as_json:
        print(json.dumps({kind: str(path), "error": message}), flush=True)
    else:  # named once: a DataError's message names its file already
        named = message if message.startswith(str(path)) else f"{path}: {message}"
        print(f"error: {named}", file=sys.stderr, flush=True)


def _annotated_copy_fault(out: Path, inputs: list[Path]) -> str | None:
    """Why --out cannot take the annotated copy, or None. Checked before the model loads: a
    folder failed only when the whole video had been processed, and the input itself was
    overwritten while it was being read."""
    if out.is_dir():
        return "is a folder: give the name of the mp4 file to write"
    if out.suffix.lower() != ".mp4":
        return "the annotated copy is an mp4 video: give a file name ending in .mp4"
    if out.exists() and any(path.exists() and out.samefile(path) for path in inputs):
        return "is the video being read: give another file name"
    return folder_fault(out.parent)


def _is_video(path: Path) -> bool:
    """Whether the file is in a video container the service reads too (a HEIF photo, AVIF or
    HEIC, is not, though it is an ISO base media file)."""
    from service.video_frames import SNIFF_BYTES, sniff_container

    try:
        with path.open("rb") as file:
            return sniff_container(file.read(SNIFF_BYTES)) is not None
    except OSError:
        return False  # read_rgb names the failure as an image's


def _detect_video(detector, path: Path, args: argparse.Namespace) -> int:
    """Every (sampled) frame: detected, tracked, printed with --json, drawn into --out."""
    import av

    from data.images import MAX_USER_PIXELS
    from data.video_writer import VideoWriter
    from model.track import Tracker
    from service.errors import ServiceError
    from service.video_frames import VideoReader

    tracker = Tracker()
    frames = 0
    started = time.perf_counter()
    writer = None
    # The annotated copy is written beside --out and put in its place once whole: a video
    # that breaks off, a full disk or Ctrl-C leaves no half-written mp4 under the name asked
    # for (one stopped mid-way does not play).
    partial = args.out.with_name(f".{args.out.name}.partial") if args.out is not None else None
    try:
        with path.open("rb") as file, closing(VideoReader(file, MAX_USER_PIXELS)) as reader:
            # The annotated copy plays at the rate its frames were sampled at: --fps, unless
            # the stream's own rate is lower.
            rate = min((r for r in (args.fps, reader.info.fps) if r), default=FALLBACK_FPS)
            for frame in reader.frames(args.fps, max_frames=sys.maxsize):
                detections = detector.detect(frame.rgb)
                tracks = tracker.update(detections)
                signs = [_sign(d, t) for d, t in zip(detections, tracks, strict=True)]
                if args.json:
                    line = {
                        "video": str(path),
                        "frame_index": frame.index,
                        "pts_s": round(frame.pts_s, 6),
                        "signs": signs,
                    }
                    print(json.dumps(line), flush=True)
                if args.out is not None:
                    if writer is None:
                        height, width = frame.rgb.shape[:2]
                        writer = VideoWriter(partial, rate, width, height)
                    writer.write(draw_signs(frame.rgb, detections, signs))
                frames += 1
        if writer is not None:
            # Closing flushes the encoder: a failure here is writing --out's, reported below.
            finished, writer = writer, None
            finished.close()
            os.replace(partial, args.out)
    except ServiceError as error:  # not a video, no video stream, corrupt, cut short
        _print_failure("video", path, error.message, args.json)
        return 1
    except (av.FFmpegError, OSError) as error:  # opening the file, or writing --out
        _print_failure("video", path, str(error), args.json)
        return 1
    finally:
        if writer is not None:
            # Left open by an error that is already reported: closing must not replace it.
            with suppress(av.FFmpegError, OSError):
                writer.close()
        if partial is not None:
            with suppress(OSError):  # a folder that could not be made has no partial file
                partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    summary = {
        "video": str(path),
        "frames": frames,
        "tracks": tracker.started,
        "seconds": round(seconds, 2),
        "frames_per_s": round(frames / seconds, 2) if seconds > 0 else None,
        "out": str(args.out) if args.out else None,
    }
    print(json.dumps({"summary": summary}), file=sys.stdout if args.json else sys.stderr)
    return 0


def draw_signs(rgb, detections, signs):
    """A copy of the frame with each sign's mask tinted, its box and its label
    (#track class confidence) drawn."""
    import cv2
    import numpy as np

    out = rgb.copy()
    height, width = out.shape[:2]
    thickness = max(1, round(max(height, width) / 640))
    scale = 0.4 * thickness
    for detection, sign in zip(detections, signs, strict=True):
        x1, y1, x2, y2 = detection.box
        region = out[y1:y2, x1:x2]
        region[detection.mask] = (0.6 * region[detection.mask] + 0.4 * np.array(MASK_COLOR)).astype(
            np.uint8
        )
        color = KNOWN_COLOR if sign["kind"] == "sign" else UNKNOWN_COLOR
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 0), thickness + 2)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color, thickness)
        track = f"#{sign['track_id']} " if "track_id" in sign else ""
        label = f"{track}{sign['class_name']} {sign['confidence']:.0%}"
        label = label.encode("ascii", "replace").decode("ascii")
        (text_width, text_height), baseline = cv2.getTextSize(
            label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness
        )
        top = y1 - text_height - baseline - 2 if y1 - text_height - baseline - 2 >= 0 else y2
        left = min(max(0, x1), max(0, width - text_width - 2))
        cv2.rectangle(
            out, (left, top), (left + text_width + 2, top + text_height + baseline + 2), color, -1
        )
        cv2.putText(
            out,
            label,
            (left + 1, top + text_height + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (17, 17, 17),
            thickness,
            cv2.LINE_AA,
        )
    return out


def run_eval_detect(args: argparse.Namespace) -> int:
    from model.detect_eval import evaluate_folder

    detector = _load_detector(args)
    if detector is None:
        return 2
    try:
        result = evaluate_folder(args.data, detector.detect, args.limit)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({**_header(args, detector), "class_agnostic": True, **result}, indent=2))
    return 0


def run_eval_track(args: argparse.Namespace) -> int:
    from model.track_eval import evaluate_tracking_folder

    detector = _load_detector(args)
    if detector is None:
        return 2
    try:
        result = evaluate_tracking_folder(args.data, detector.detect, limit=args.limit)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({**_header(args, detector), **result}, indent=2))
    return 0


def _header(args: argparse.Namespace, detector) -> dict:
    """What an evaluation ran on and with: the head of its JSON."""
    return {
        "data": str(args.data),
        "scene_model": detector.segmenter.info.path,
        "model": detector.predictor.info.path,
        "device": str(detector.segmenter.device),
        "config": asdict(detector.config),
        "mirror": detector.segmenter.mirror,
        "scene_dtype": detector.segmenter.dtype_name,
    }


def run_mine_negatives(args: argparse.Namespace) -> int:
    from model.negatives import annotated_frames, mine, video_frames, write_marked_signs

    # Checked before the detector loads and before anything is written.
    if not args.source.exists():
        print(f"error: {args.source}: no such video or frames folder", file=sys.stderr)
        return 2
    if args.out.exists() and not (args.out.is_dir() and not any(args.out.iterdir())):
        # A second source mined into the same folder overwrote the first's crops of the
        # same frame numbers and mixed the rest in.
        print(
            f"error: --out {args.out}: not an empty folder; mine each source into a new one",
            file=sys.stderr,
        )
        return 2
    if args.signs and not args.source.is_dir():
        print("error: --signs needs a COCO frames folder (a video marks no sign)", file=sys.stderr)
        return 2
    kinds = args.no_sign_backgrounds
    if kinds is not None and (
        not args.source.is_dir() or not kinds or not set(kinds) <= set(SCENE_BACKGROUNDS)
    ):
        print(
            "error: --no-sign-backgrounds takes a generated scenes folder and kinds of "
            f"{','.join(SCENE_BACKGROUNDS)}, got {','.join(kinds)}",
            file=sys.stderr,
        )
        return 2
    try:  # a source that is no video or no COCO frames folder fails here
        if args.source.is_dir():
            source = annotated_frames(args.source, args.step, kinds)
        else:
            source = video_frames(args.source, args.skip_seconds, args.step)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    detector = _load_detector(args)
    if detector is None:
        return 2
    # The topmost folder this run creates, or None when OUT is there (and empty).
    created = next(
        (folder for folder in reversed((args.out, *args.out.parents)) if not folder.exists()), None
    )
    try:
        # The signs first: a class outside CTSRD's is refused before the long mining.
        signs = write_marked_signs(args.source, args.out) if args.signs else None
        frames, crops = mine(detector, source, args.out)
    except (DataError, OSError) as error:  # a frame or video that breaks off; a full disk
        _remove_written(args.out, created)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _remove_written(args.out, created)
        raise
    if frames == 0 and not signs:
        # Past --skip-seconds, or with no frame of the kinds asked for: an empty crops folder
        # would train nothing and read as a success.
        _remove_written(args.out, created)
        print(
            f"error: {args.source}: no frame to mine (check --skip-seconds, --step and "
            "--no-sign-backgrounds)",
            file=sys.stderr,
        )
        return 2
    print(f"{crops} 'no sign' crops from {frames} frames of {args.source} in {args.out}")
    if signs is not None:
        print(f"{signs} sign crops of the signs marked in {args.source} in {args.out}")
    return 0


def _remove_written(out: Path, created: Path | None) -> None:
    """Undo a failed run, so that no half-written crops folder is left to train on: remove
    the folders it created, or empty OUT when OUT was there (it was empty then)."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
