"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


def device_fault(name: str | None) -> str | None:
    """Why the device `name` (None: auto) cannot be used on this machine, for a one-line
    error before any work starts; None when it can."""
    from model.device import resolve_device

    try:
        resolve_device(name or "auto")
    except ValueError as error:
        return str(error)
    return None


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535 (the OS would take 99999 modulo 65536)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1 to 65535, got {value}")
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


def folders_opened(paths: list[Path], wanted: Callable[[Path], bool]) -> list[Path]:
    """`paths` with each folder replaced by the files directly in it that `wanted` takes,
    sorted by name (`greedysign predict photos/` reads every photo there); hidden files (a
    Mac's `._IMG_1.jpg`, a partial write) are not taken. A folder with none, or one that
    cannot be listed, stays as given, for the error that names it."""
    opened: list[Path] = []
    for path in paths:
        if path.is_dir():
            try:
                children = list(path.iterdir())
            except OSError:
                children = []
            inside = sorted(
                child
                for child in children
                if not child.name.startswith(".") and child.is_file() and wanted(child)
            )
            opened.extend(inside or [path])
        else:
            opened.append(path)
    return opened
