"""Class names of the supported datasets, read from the CSV files shipped with the package."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

DATASETS = ("ctsrd", "gtsrb")


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
    return [c.name for c in sign_classes(dataset)]
