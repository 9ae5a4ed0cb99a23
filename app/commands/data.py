"""`greedysign data check|synth|preview`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from data.records import DataError


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect, validate, generate and preview datasets")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    check = sub.add_parser("check", help="validate a dataset; report duplicates and leakage")
    check.add_argument("path", type=Path, help="TSRD folder (plain or official layout) or GTSRB")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    _add_on_error(check)
    check.set_defaults(handler=run_check)

    synth = sub.add_parser("synth", help="write a synthetic CTSRD set (TSRD format + masks)")
    synth.add_argument("out", type=Path)
    synth.add_argument("--per-class", type=int, default=20, help="images per class (58 classes)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=run_synth)

    preview = sub.add_parser("preview", help="contact sheet of samples with masks and boxes")
    preview.add_argument("path", type=Path)
    preview.add_argument("--out", type=Path, default=Path("preview.png"))
    preview.add_argument("--count", type=int, default=32, help="number of samples")
    preview.add_argument("--image-size", type=int, default=128, help="tile size in pixels")
    preview.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="show eval-time samples instead of augmented ones",
    )
    preview.add_argument("--seed", type=int, default=0)
    _add_on_error(preview)
    preview.set_defaults(handler=run_preview)


def _add_on_error(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="stop at the first bad record (default) or skip and report",
    )


def run_check(args: argparse.Namespace) -> int:
    from data.check import check_dataset

    try:
        report = check_dataset(args.path, on_error=args.on_error)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from data.synth import generate_synthetic

    started = time.perf_counter()
    written = generate_synthetic(args.out, per_class=args.per_class, seed=args.seed)
    seconds = time.perf_counter() - started
    print(
        f"wrote {written} images to {args.out} in {seconds:.1f} s "
        f"({written / seconds * 60:.0f} images/min)"
    )
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from data.preview import write_preview

    try:
        write_preview(
            args.path,
            args.out,
            count=args.count,
            tile_size=args.image_size,
            augment=args.augment,
            seed=args.seed,
            on_error=args.on_error,
        )
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
