"""One entry point for every dataset: find the layout of a folder and read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data.classes import class_names
from data.gtsrb import find_annotation_files, read_gtsrb
from data.records import DataError, SignRecord
from data.tsrd import find_official_layout, is_plain_layout, read_official, read_plain
from data.validate import check_on_error

LOOKED_FOR = (
    "TSRD official layout (tsrd-train/ with TsignRecgTrain*Annotation.txt and/or TSRD-Test/ "
    "with TsignRecgTest*Annotation.txt, at the top or one folder down); "
    "TSRD plain layout (images/ + annotations.txt); "
    "GTSRB (a *.csv whose header is Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId, "
    "at the top or one folder down, images beside it or in images/)"
)


@dataclass
class DatasetIndex:
    name: str  # "ctsrd" or "gtsrb" (selects data.classes tables)
    layout: str  # "plain" | "official" | "gtsrb"
    root: Path
    records: list[SignRecord]
    class_names: list[str]
    skipped: list[DataError] = field(default_factory=list)  # filled only with on_error="skip"


def load_dataset(path: Path | str, *, on_error: str = "raise") -> DatasetIndex:
    """Read the dataset at `path`, whichever known layout it has, checking every record.

    on_error="raise" stops at the first bad record; on_error="skip" leaves bad records out
    and lists their errors in `skipped`. A folder of no known layout is a DataError either way.
    """
    check_on_error(on_error)
    root = Path(path)
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
    elif csv_files := find_annotation_files(root):
        name, layout = "gtsrb", "gtsrb"
        names = class_names(name)
        records, skipped = read_gtsrb(csv_files, num_classes=len(names), on_error=on_error)
    else:
        raise DataError(root, None, f"no known dataset layout; looked for: {LOOKED_FOR}")
    return DatasetIndex(name, layout, root, records, names, skipped)
