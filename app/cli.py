"""`greedysign`: one command with subcommands. Thin: it parses arguments and calls the
functions that live where the work lives (data/, model/, service/)."""

from __future__ import annotations

import argparse
import os
import sys

from app.commands import analyze as analyze_commands
from app.commands import data as data_commands
from app.commands import detect as detect_commands
from app.commands import predict as predict_commands
from app.commands import serve as serve_commands
from app.commands import train as train_commands
from app.commands.arguments import CommandParser


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="greedysign",
        description="Traffic-sign recognition with a ResNet trained layer by layer (Greedy-DIB).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_commands.register(commands)
    train_commands.register(commands)
    predict_commands.register(commands)
    detect_commands.register(commands)
    serve_commands.register(commands)
    analyze_commands.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except BrokenPipeError:
        # The reader went away (`greedysign data check ... | head`): stop quietly, as Unix
        # tools do, and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        # Ctrl-C is the user's choice, not a fault: one line, and the shell's code for a stop
        # by SIGINT (a stopped training run resumes from its last checkpoint).
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
