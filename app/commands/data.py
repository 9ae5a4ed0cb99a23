"""`greedysign data check|synth|scenes|drives|split-frames|split-gtsrb|resize-frames|preview`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from app.commands.arguments import comma_list
from data.records import DataError
from model.options import positive_int

# Kept here (not imported from data.scenes) so that `greedysign --help` loads no image code.
SCENE_BACKGROUNDS = ("video", "negatives", "dfg")
SCENE_SIGN_SOURCES = ("synthetic", "tt100k", "tsrd", "dfg", "gtsrb")
SCENE_DEFAULT_SIGN_SOURCES = ("synthetic", "tt100k", "tsrd")
# What marks a folder as holding a dataset: TSRD's plain folder and COCO frames.
ANNOTATION_FILES = ("annotations.txt", "annotations.json")
LISTED_SKIPPED = 20  # bad records `data preview` names one by one, as `data check` does


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect, validate, generate and preview datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    check = sub.add_parser("check", help="validate a dataset; report duplicates and leakage")
    check.add_argument(
        "path", type=Path, help="TSRD folder (plain or official layout), TT100K crops or GTSRB"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    _add_on_error(check)
    check.set_defaults(handler=run_check)

    synth = sub.add_parser("synth", help="write a synthetic CTSRD set (TSRD format + masks)")
    synth.add_argument(
        "out", type=Path, help="writes OUT/images, OUT/masks and OUT/annotations.txt"
    )
    synth.add_argument(
        "--per-class", type=positive_int, default=20, help="images per class (58 classes)"
    )
    synth.add_argument("--seed", type=int, default=0, help="seeds the drawing: same seed, same set")
    synth.set_defaults(handler=run_synth)

    scenes = sub.add_parser(
        "scenes", help="composite signs with exact masks into street frames (COCO format)"
    )
    scenes.add_argument("out", type=Path, help="writes OUT/images/*.jpg and OUT/annotations.json")
    scenes.add_argument("--frames", type=int, default=100, help="number of frames")
    _add_scene_options(scenes)
    scenes.set_defaults(handler=run_scenes)

    drives = sub.add_parser(
        "drives",
        help="short videos of composited scenes, filmed driving toward their signs, with every "
        "sign's track (COCO with video fields; mp4s)",
    )
    drives.add_argument(
        "out",
        type=Path,
        help="writes OUT/images/drive-NNN/*.jpg, OUT/videos/drive-NNN.mp4, OUT/annotations.json",
    )
    drives.add_argument("--drives", type=int, default=10, help="number of drives")
    drives.add_argument("--frames-per-drive", type=int, default=30, help="frames of each drive")
    drives.add_argument(
        "--zoom", type=float, default=2.0, help="how much larger the signs are at the end (1-8)"
    )
    drives.add_argument("--fps", type=float, default=10.0, help="of the written videos")
    _add_scene_options(drives, size_note=" in the first frame")
    drives.set_defaults(handler=run_drives)

    split = sub.add_parser(
        "split-frames",
        help="cut a COCO frames folder (DFG) into train and test sets by frame order",
    )
    split.add_argument("path", type=Path, help="COCO frames folder, e.g. ../shared/data/dfg-frames")
    split.add_argument("out", type=Path, help="writes OUT/train and OUT/test (links to the images)")
    split.add_argument(
        "--test-share", type=float, default=0.3, help="the last share of frames by name: test"
    )
    split.set_defaults(handler=run_split_frames)

    split_signs = sub.add_parser(
        "split-gtsrb",
        help="cut a GTSRB folder into train and test sets, each sign's track on one side",
    )
    split_signs.add_argument("path", type=Path, help="GTSRB folder, e.g. ../shared/data/gtsrb-real")
    split_signs.add_argument(
        "out", type=Path, help="writes OUT/train and OUT/test (links to the images)"
    )
    split_signs.add_argument(
        "--test-every", type=int, default=3, help="one track in N on the test side (default 3)"
    )
    split_signs.set_defaults(handler=run_split_gtsrb)

    resize = sub.add_parser(
        "resize-frames",
        help="a COCO frames folder at a lower resolution: what a lower-resolution camera sees "
        "of the same scenes",
    )
    resize.add_argument("path", type=Path, help="COCO frames folder, e.g. runs/scenes-val")
    resize.add_argument("out", type=Path, help="writes OUT/images and OUT/annotations.json")
    resize.add_argument(
        "--scale", type=float, required=True, help="the new size's share of the old (0 to 1]"
    )
    resize.set_defaults(handler=run_resize_frames)

    preview = sub.add_parser("preview", help="contact sheet of samples with masks and boxes")
    preview.add_argument("path", type=Path, help="dataset folder (TSRD, TT100K crops or GTSRB)")
    preview.add_argument("--out", type=Path, default=Path("preview.png"), help="PNG to write")
    preview.add_argument("--count", type=positive_int, default=32, help="number of samples")
    preview.add_argument("--image-size", type=positive_int, default=128, help="tile size in pixels")
    preview.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="show eval-time samples instead of augmented ones",
    )
    preview.add_argument(
        "--seed", type=int, default=0, help="seeds the choice of samples and their augmentation"
    )
    _add_on_error(preview)
    preview.set_defaults(handler=run_preview)


def _add_scene_options(parser: argparse.ArgumentParser, size_note: str = "") -> None:
    """What a generated frame holds: shared by `data scenes` and `data drives`."""
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds every draw: same seed, same frames"
    )
    parser.add_argument("--width", type=int, default=1280, help="frame width (px)")
    parser.add_argument("--height", type=int, default=720, help="frame height (px)")
    parser.add_argument(
        "--min-size", type=float, default=12.0, help=f"smallest sign (px){size_note}"
    )
    parser.add_argument(
        "--max-size", type=float, default=120.0, help=f"largest common sign (px){size_note}"
    )
    parser.add_argument(
        "--large-max-size", type=float, default=320.0, help="largest of the few larger signs (px)"
    )
    parser.add_argument(
        "--signs",
        type=int,
        nargs=2,
        default=(1, 10),
        metavar=("MIN", "MAX"),
        help="sign groups per frame: a group is one sign, a stack or a post of boards, or none "
        "when it finds no room",
    )
    parser.add_argument(
        "--stack-rate",
        type=float,
        help="share of signs with a second sign stacked under them, touching or nearly "
        "(default: the generator's, 0.15)",
    )
    parser.add_argument(
        "--board-stack-rate",
        type=float,
        default=0.0,
        help="share of sign groups drawn as a post of 2-7 direction boards stacked flush "
        "(default 0)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="real data (video/, tt100k-crops/, ctsrd-real/, dfg-frames/, gtsrb-real/); default "
        "$GREEDYSIGN_SHARED_DATA or ../shared/data beside the repository",
    )
    parser.add_argument(
        "--backgrounds",
        default=",".join(SCENE_BACKGROUNDS),
        help=f"comma-separated, of {','.join(SCENE_BACKGROUNDS)} (those present are used; "
        "none present: procedural textures; dfg frames keep the signs DFG leaves unannotated, "
        "mostly under 35 px, unmarked: the shipped scene model trained on video,negatives)",
    )
    parser.add_argument(
        "--sign-sources",
        default=",".join(SCENE_DEFAULT_SIGN_SOURCES),
        help=f"comma-separated, of {','.join(SCENE_SIGN_SOURCES)} (those present are used; "
        "dfg: signs cut from the DFG frames along their polygons; gtsrb: European sign "
        "photos from DATA_ROOT/gtsrb-real)",
    )
    parser.add_argument(
        "--dfg",
        type=Path,
        default=None,
        help="COCO frames folder for the dfg backgrounds and signs (default: DATA_ROOT/"
        "dfg-frames); the train side of greedysign data split-frames keeps its test unseen",
    )
    parser.add_argument(
        "--gtsrb",
        type=Path,
        default=None,
        help="GTSRB folder for the gtsrb signs (default: DATA_ROOT/gtsrb-real)",
    )
    parser.add_argument(
        "--reader-side",
        choices=("training", "held-out"),
        default=None,
        help="draw TT100K and TSRD crops only from this side of the sign model's split: "
        "held-out for frames that score the sign model, training for frames that teach it "
        "(default: every crop, which suits the scene model alone)",
    )
    parser.add_argument(
        "--reader",
        type=Path,
        default=None,
        help="the sign model whose split --reader-side follows (a model file or run folder; "
        "default: the newest run, else the shipped sign model)",
    )


def _add_on_error(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="stop at the first bad record (default; exit 2) or skip and report them "
        "(exit 1 when any was skipped)",
    )


def run_check(args: argparse.Namespace) -> int:
    from data.check import check_dataset

    try:
        report = check_dataset(args.path, on_error=args.on_error)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    # Skipped records are reported above; the exit code says so too, for scripts.
    return 1 if report.skipped else 0


def _generated_set_fault(out: Path) -> str | None:
    """Why a generator cannot write its set into `out`, or None. A folder that holds a set
    already is refused: the new annotation file replaced the old one, and the old images
    were left in place, unlisted."""
    if out.exists() and not out.is_dir():
        return f"{out}: not a folder"
    held = [name for name in ANNOTATION_FILES if (out / name).exists()]
    if held:
        return f"{out}: holds a dataset already ({', '.join(held)}); write to a new folder"
    return None


def run_synth(args: argparse.Namespace) -> int:
    from data.synth import generate_synthetic

    fault = _generated_set_fault(args.out)
    if fault is not None:
        print(f"error: {fault}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        written = generate_synthetic(args.out, per_class=args.per_class, seed=args.seed)
    except OSError as error:  # a folder it may not write in, a full disk
        print(f"error: {error}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(
        f"wrote {written} images to {args.out} in {seconds:.1f} s "
        f"({written / seconds * 60:.0f} images/min)"
    )
    return 0


def _scene_config_and_sources(args: argparse.Namespace):
    """The SceneConfig and SceneSources the scene options ask for (ValueError if invalid)."""
    from data.scenes import SceneConfig, SceneSources

    config = SceneConfig(
        width=args.width,
        height=args.height,
        min_size=args.min_size,
        max_size=args.max_size,
        large_max_size=max(args.large_max_size, args.max_size),
        signs=tuple(args.signs),
        board_stack_rate=args.board_stack_rate,
        **({} if args.stack_rate is None else {"stack_rate": args.stack_rate}),
    )
    # A path given that is not there would leave its real sources out, silently: the
    # default root and its parts may be missing (procedural textures then), a named one may
    # not. --dfg may name a COCO annotation file rather than its folder.
    named = {"--data-root": args.data_root, "--dfg": args.dfg, "--gtsrb": args.gtsrb}
    for flag, path in named.items():
        if path is not None and not path.exists():
            raise ValueError(f"{flag} {path}: no such folder")
    if args.data_root is not None and not args.data_root.is_dir():
        raise ValueError(f"--data-root {args.data_root}: not a folder")
    sources = SceneSources.from_data_root(
        args.data_root,
        backgrounds=comma_list(args.backgrounds),
        signs=comma_list(args.sign_sources),
    )
    if args.dfg is not None:
        sources = dataclasses.replace(sources, dfg=args.dfg)
    if args.gtsrb is not None:
        sources = dataclasses.replace(sources, gtsrb=args.gtsrb)
    if args.reader_side is not None:
        sources = dataclasses.replace(sources, crop_side=_crop_side(args.reader, args.reader_side))
    return config, sources


def _crop_side(reader: Path | None, side: str):
    """The CropSide of the sign model `reader` (ValueError if it records no split)."""
    from data.scenes import CropSide
    from model.checkpoint import load_model
    from model.runs import resolve_model

    try:
        path = resolve_model(reader)
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
    _, info = load_model(path)
    if info.task != "crops":
        raise ValueError(f"{path} is a {info.task} model; --reader takes a sign model")
    held_out = info.split.get("test_sha1")
    if not held_out:
        raise ValueError(f"{path} records no held-out images, so it has no sides to keep")
    return CropSide(frozenset(held_out), side, str(path))


def _print_sources(generator) -> None:
    """What a scene generator found to draw from."""
    backgrounds = ", ".join(generator.background_kinds) or "procedural textures (no real data)"
    print(f"backgrounds: {backgrounds}; signs: {', '.join(generator.sign_kinds)}")
    side = generator.sources.crop_side
    if side is not None:
        counts = ", ".join(f"{n} {kind}" for kind, n in generator.real_crop_counts().items())
        print(f"real crops: the {side.side} side of {side.model} ({counts or 'none drawn'})")


def run_scenes(args: argparse.Namespace) -> int:
    from data.scenes import SceneGenerator, write_scenes

    fault = _generated_set_fault(args.out)
    if fault is not None:
        print(f"error: {fault}", file=sys.stderr)
        return 2
    try:
        config, sources = _scene_config_and_sources(args)
        generator = SceneGenerator(sources, config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print_sources(generator)
    try:
        report = write_scenes(
            args.out, frames=args.frames, seed=args.seed, config=config, sources=sources
        )
    except (DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.frames} frames ({args.width}x{args.height}) with {len(report.sizes)} signs "
        f"({report.ignored} marked ignore) to {args.out} in {report.seconds:.1f} s "
        f"({report.images_per_minute:.0f} images/min)"
    )
    print(report.size_summary())
    return 0


def run_drives(args: argparse.Namespace) -> int:
    from data.drives import DriveConfig, DriveGenerator, write_drives

    fault = _generated_set_fault(args.out)
    if fault is not None:
        print(f"error: {fault}", file=sys.stderr)
        return 2
    try:
        config, sources = _scene_config_and_sources(args)
        drive = DriveConfig(frames=args.frames_per_drive, zoom=args.zoom, fps=args.fps)
        generator = DriveGenerator(sources, config, drive)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    _print_sources(generator.scenes)
    try:
        report = write_drives(
            args.out,
            drives=args.drives,
            seed=args.seed,
            config=config,
            drive=drive,
            sources=sources,
        )
    except (DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"wrote {report.drives} drives of {drive.frames} frames ({args.width}x{args.height}, "
        f"{len(report.sizes)} signs in {report.tracks} tracks) to {args.out} in "
        f"{report.seconds:.1f} s ({report.frames_per_minute:.0f} frames/min)"
    )
    return 0


def run_split_frames(args: argparse.Namespace) -> int:
    from data.frames import split_frames

    return _print_split(lambda: split_frames(args.path, args.out, args.test_share), args, "frames")


def run_split_gtsrb(args: argparse.Namespace) -> int:
    from data.gtsrb import split_gtsrb

    return _print_split(lambda: split_gtsrb(args.path, args.out, args.test_every), args, "images")


def _print_split(split, args: argparse.Namespace, unit: str) -> int:
    """Run `split` (-> train count, test count) and say what it wrote, or why it could not."""
    try:
        train, test = split()
    except (DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {train} training {unit} to {args.out / 'train'}, {test} to {args.out / 'test'}")
    return 0


def run_resize_frames(args: argparse.Namespace) -> int:
    from data.frames import resize_frames

    try:
        written = resize_frames(args.path, args.out, args.scale)
    except (DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {written} frames at {args.scale:g} of their size to {args.out}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    import cv2

    from data.preview import write_preview

    # Checked before the samples are drawn: OpenCV refused these only at the end, raising.
    if args.out.is_dir():
        print(f"error: --out {args.out}: is a folder; give an image file name", file=sys.stderr)
        return 2
    if not cv2.haveImageWriter(str(args.out)):
        print(
            f"error: --out {args.out}: not an image file name OpenCV writes (.png, .jpg, ...)",
            file=sys.stderr,
        )
        return 2
    try:
        skipped = write_preview(
            args.path,
            args.out,
            count=args.count,
            tile_size=args.image_size,
            augment=args.augment,
            seed=args.seed,
            on_error=args.on_error,
        )
    except (DataError, OSError) as error:  # OSError: writing --out
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    # As `data check` does: the skipped records named, and the exit code says so too.
    if skipped:
        records = "record" if len(skipped) == 1 else "records"
        print(f"skipped {len(skipped)} bad {records}:", file=sys.stderr)
        for error in skipped[:LISTED_SKIPPED]:
            print(f"  {error}", file=sys.stderr)
        if len(skipped) > LISTED_SKIPPED:
            more = len(skipped) - LISTED_SKIPPED
            print(f"  ... and {more} more (data check --json lists all)", file=sys.stderr)
    return 1 if skipped else 0
