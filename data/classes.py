"""Class names of the supported datasets, read from the CSV files shipped with the package,
and the two open-set answers every model has beside them.

A model of a dataset with n classes has n + 2 outputs: the n classes, then "unknown sign"
(a sign of none of the n classes) at id n and "no sign" at id n + 1. Records use the same
ids, so a TT100K crop of a sign CTSRD has no class for is labelled n.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

DATASETS = ("ctsrd", "gtsrb")
UNKNOWN_SIGN = "unknown sign"
NO_SIGN = "no sign"
OPEN_SET_NAMES = (UNKNOWN_SIGN, NO_SIGN)


@dataclass(frozen=True, slots=True)
class SignClass:
    class_id: int
    name: str
    family: str  # "prohibitory" | "mandatory" | "warning" | "" where the dataset has none


@cache
def sign_classes(dataset: str) -> tuple[SignClass, ...]:
    """All classes of `dataset` in class-id order."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    text = resources.files("data").joinpath(f"{dataset}_classes.csv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    classes = tuple(
        SignClass(int(row["class_id"]), row["name"], row.get("family") or "") for row in rows
    )
    assert [c.class_id for c in classes] == list(range(len(classes))), "class ids must be 0..n-1"
    return classes


def class_names(dataset: str) -> list[str]:
    """The dataset's own classes, without the open-set answers."""
    return [c.name for c in sign_classes(dataset)]


def label_names(dataset: str) -> list[str]:
    """Every label a record or a model output can take: the classes, then the open set."""
    return [*class_names(dataset), *OPEN_SET_NAMES]


def unknown_sign_id(dataset: str) -> int:
    return len(sign_classes(dataset))


def no_sign_id(dataset: str) -> int:
    return len(sign_classes(dataset)) + 1
