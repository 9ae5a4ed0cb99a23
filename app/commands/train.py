"""`greedysign train|eval`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from app.commands.arguments import DEVICE_HELP, device_fault
from data.records import DataError
from model.options import device_name


def register(commands: argparse._SubParsersAction) -> None:
    from model.choices import EVAL_SUBSETS
    from model.options import get_args_parser

    train = commands.add_parser(
        "train",
        parents=[get_args_parser(add_help=False)],
        help="train a model (Greedy-DIB by default) and make it the newest run",
    )
    train.set_defaults(handler=run_train)

    evaluate = commands.add_parser("eval", help="metrics of a model on a dataset, as JSON")
    evaluate.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model file or run folder (default: newest run, else shipped)",
    )
    evaluate.add_argument(
        "--data",
        type=Path,
        action="append",
        required=True,
        help="dataset folder; give it again to evaluate on several (figures per collection)",
    )
    evaluate.add_argument(
        "--subset",
        choices=EVAL_SUBSETS,
        default="test",
        help="test: held-out side of the model's own split (default); "
        "all: every distinct image (data the model never saw)",
    )
    evaluate.add_argument("--per-class", action="store_true", help="include per-class figures")
    evaluate.add_argument("--device", type=device_name, default="auto", help=DEVICE_HELP)
    evaluate.set_defaults(handler=run_eval)


def run_train(args: argparse.Namespace) -> int:
    from model.train import main

    fault = device_fault(args.device)
    if fault is not None:  # before the data is read (model/train.py resolves it only then)
        print(f"error: {fault}", file=sys.stderr)
        return 2
    # Recorded in the model, so that its card can say how to make it again.
    args.command_line = shlex.join(["greedysign", "train", *sys.argv[2:]])
    try:
        main(args)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SystemExit as refusal:
        # model/train.py refuses arguments as torchvision's scripts do, with SystemExit(message).
        if not isinstance(refusal.code, str):
            raise
        print(f"error: {refusal.code}", file=sys.stderr)
        return 2
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from model.evaluate import evaluate_model
    from model.runs import resolve_model

    try:
        model = resolve_model(args.model)
        metrics = evaluate_model(model, args.data, subset=args.subset, device=args.device)
    except (DataError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for folder, images in metrics["images_by_folder"].items():
        if images == 0:
            print(
                f"warning: no {args.subset} images of {model} in {folder}: the figures are "
                "the other folders' alone",
                file=sys.stderr,
            )
    if not args.per_class:
        for part in (metrics, *metrics.get("datasets", {}).values()):
            part.pop("per_class")
    print(json.dumps(metrics, indent=2))
    return 0
