"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
import math

DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (a rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def comma_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated names, blanks dropped ("video, dfg" -> two)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Ends an option's help with "(default: X)", unless the help already says what the
    default is, or there is none worth showing: None, or a flag's (--no-augment's True)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows the defaults. Subcommands get it too: argparse
    makes a subparser of its parent's class."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
