"""Argument types shared by the commands."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1 (a count or a step)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def comma_list(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated names, blanks dropped ("video, dfg" -> two)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())
