"""One entry point for every dataset: find the layout of a folder and read it; several folders
read as one dataset when they share a label space."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data.classes import class_names
from data.gtsrb import find_annotation_files, read_gtsrb
from data.records import DataError, SignRecord
from data.tsrd import find_official_layout, is_plain_layout, read_official, read_plain
from data.tt100k import find_layout as find_tt100k_layout
from data.tt100k import read_tt100k
from data.validate import check_on_error

LOOKED_FOR = (
    "TSRD official layout (tsrd-train/ with TsignRecgTrain*Annotation.txt and/or TSRD-Test/ "
    "with TsignRecgTest*Annotation.txt, at the top or one folder down); "
    "TSRD plain layout (images/ + annotations.txt); "
    "TT100K crops (classes.csv beside class-code folders, or beside train/ and/or test/ "
    "holding them); "
    "GTSRB (a *.csv whose header is Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId, "
    "at the top or one folder down, images beside it or in images/)"
)


@dataclass
class DatasetIndex:
    name: str  # label space: "ctsrd" or "gtsrb" (selects data.classes tables)
    layout: str  # "plain" | "official" | "tt100k" | "gtsrb", "+"-joined for several folders
    root: Path  # the first folder, for several
    records: list[SignRecord]
    class_names: list[str]
    skipped: list[DataError] = field(default_factory=list)  # filled only with on_error="skip"
    roots: list[Path] = field(default_factory=list)  # every folder read

    def __post_init__(self) -> None:
        self.roots = self.roots or [self.root]


def load_dataset(path: Path | str, *, on_error: str = "raise") -> DatasetIndex:
    """Read the dataset at `path`, whichever known layout it has, checking every record.

    on_error="raise" stops at the first bad record; on_error="skip" leaves bad records out
    and lists their errors in `skipped`. A folder of no known layout is a DataError either way.
    """
    check_on_error(on_error)
    root = Path(path)
    if root.is_file():
        raise DataError(root, None, "is a file, not a dataset folder")
    if not root.is_dir():
        raise DataError(root, None, "no such dataset folder")

    if official_splits := find_official_layout(root):
        name, layout = "ctsrd", "official"
        names = class_names(name)
        records, skipped = read_official(official_splits, num_classes=len(names), on_error=on_error)
    elif is_plain_layout(root):
        name, layout = "ctsrd", "plain"
        names = class_names(name)
        records, skipped = read_plain(root, num_classes=len(names), on_error=on_error)
    elif code_folders := find_tt100k_layout(root):
        name, layout = "ctsrd", "tt100k"
        names = class_names(name)
        records, skipped = read_tt100k(
            root, code_folders, num_classes=len(names), on_error=on_error
        )
    elif csv_files := find_annotation_files(root):
        name, layout = "gtsrb", "gtsrb"
        names = class_names(name)
        records, skipped = read_gtsrb(csv_files, num_classes=len(names), on_error=on_error)
    else:
        raise DataError(root, None, f"no known dataset layout; looked for: {LOOKED_FOR}")
    if not records and not skipped:
        raise DataError(root, None, f"the {layout} layout is there but holds no images")
    return DatasetIndex(name, layout, root, records, names, skipped)


def load_datasets(paths: Sequence[Path | str], *, on_error: str = "raise") -> DatasetIndex:
    """Several dataset folders as one: their records together, in the order given. They must
    share a label space (TSRD and TT100K crops are both CTSRD; GTSRB is not)."""
    if not paths:
        raise ValueError("no dataset folder given")
    indexes = [load_dataset(path, on_error=on_error) for path in paths]
    if len(indexes) == 1:
        return indexes[0]
    first = indexes[0]
    for other in indexes[1:]:
        if other.name != first.name:
            raise DataError(
                other.root,
                None,
                f"its classes are {other.name.upper()}'s, but {first.root} has "
                f"{first.name.upper()}'s: datasets trained together must share their classes",
            )
    return DatasetIndex(
        name=first.name,
        layout="+".join(index.layout for index in indexes),
        root=first.root,
        records=[record for index in indexes for record in index.records],
        class_names=first.class_names,
        skipped=[error for index in indexes for error in index.skipped],
        roots=[index.root for index in indexes],
    )
