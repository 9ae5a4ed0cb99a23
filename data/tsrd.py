"""Reader for the Chinese Traffic Sign Database (TSRD, called CTSRD in the paper).

Annotation lines are `filename;width;height;x1;y1;x2;y2;class;` (trailing `;`, CRLF or LF).
Two layouts are read:

- plain: `images/` + `annotations.txt`, with an optional `masks/` holding an exact mask
  PNG of the same stem for every image (the synthetic generator writes one);
- official: the release's `tsrd-train/` + `TsignRecgTrain4170Annotation.txt` and
  `TSRD-Test/` + `TsignRecgTest1994Annotation.txt`, each at the top or one folder down
  (the release puts the annotations in e.g. `TSRD-Train Annotation/`); records carry the
  release's split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fnmatch import fnmatch
from pathlib import Path

from data.records import DataError, SignRecord
from data.validate import annotation_lines, checked_record, collect, parse_int, split_fields

FIELDS = ("filename", "width", "height", "x1", "y1", "x2", "y2", "class")
PLAIN_IMAGES = "images"
PLAIN_ANNOTATIONS = "annotations.txt"
PLAIN_MASKS = "masks"
# TSRD names a shot CCC_NNNN.png, CCC_NNNN_j.png, CCC_1_NNNN.png or CCC_1_NNNN_1_j.png: NNNN
# numbers the shots of one series, and neighbouring numbers are often the same physical sign.
_SHOT_NAME = re.compile(r"(?P<cls>\d+)_(?:\d+_)?(?P<number>\d+)(?P<rest>[^.]*)\.\w+")
# (split, image folder, annotation file pattern); names are matched case-insensitively.
OFFICIAL_PARTS = (
    ("train", "tsrd-train", "TsignRecgTrain*Annotation.txt"),
    ("test", "TSRD-Test", "TsignRecgTest*Annotation.txt"),
)


@dataclass(frozen=True, slots=True)
class SplitFiles:
    split: str
    images: Path
    annotations: Path


def shot_sequence(filename: str) -> tuple[str, int] | None:
    """(series, number) of a TSRD-style file name, None for any other name."""
    match = _SHOT_NAME.fullmatch(filename)
    if match is None:
        return None
    # The "_1_" copies are renamed duplicates within the same numbering; "_j" shots (the
    # release's test folder) are numbered on their own.
    series = match["cls"] + ("_j" if match["rest"].endswith("j") else "")
    return series, int(match["number"])


def parse_line(
    text: str,
    *,
    image_dir: Path,
    mask_dir: Path | None,
    split: str | None,
    num_classes: int,
    source_file: Path,
    line: int,
) -> SignRecord:
    where = {"source_file": source_file, "line": line}
    filename, *numbers = split_fields(text, FIELDS, **where)
    width, height, x1, y1, x2, y2, class_id = (
        parse_int(value, name, **where) for value, name in zip(numbers, FIELDS[1:], strict=True)
    )
    record = checked_record(
        image_dir / filename,
        class_id,
        (x1, y1, x2, y2),
        (width, height),
        num_classes,
        mask_path=mask_dir / f"{Path(filename).stem}.png" if mask_dir else None,
        split=split,
        **where,
    )
    # Exact masks come only from the synthetic generator: the TSRD release has none.
    origin = "synthetic" if mask_dir else "tsrd"
    sequence = shot_sequence(filename) if origin == "tsrd" else None
    return replace(record, origin=origin, sequence=sequence)


def read_annotations(
    annotation_file: Path,
    image_dir: Path,
    *,
    num_classes: int,
    on_error: str,
    mask_dir: Path | None = None,
    split: str | None = None,
) -> tuple[list[SignRecord], list[DataError]]:
    def build(numbered_line: tuple[int, str]) -> SignRecord:
        line, text = numbered_line
        return parse_line(
            text,
            image_dir=image_dir,
            mask_dir=mask_dir,
            split=split,
            num_classes=num_classes,
            source_file=annotation_file,
            line=line,
        )

    return collect(annotation_lines(annotation_file), build, on_error)


def is_plain_layout(root: Path) -> bool:
    return (root / PLAIN_IMAGES).is_dir() and (root / PLAIN_ANNOTATIONS).is_file()


def read_plain(
    root: Path, *, num_classes: int, on_error: str
) -> tuple[list[SignRecord], list[DataError]]:
    mask_dir = root / PLAIN_MASKS
    return read_annotations(
        root / PLAIN_ANNOTATIONS,
        root / PLAIN_IMAGES,
        num_classes=num_classes,
        on_error=on_error,
        mask_dir=mask_dir if mask_dir.is_dir() else None,
    )


def _find_near(root: Path, pattern: str, *, want_dir: bool) -> Path | None:
    """First entry matching `pattern` (in any case) at the top of `root` or one folder down."""
    candidates = sorted(root.iterdir()) + sorted(
        entry for folder in sorted(root.iterdir()) if folder.is_dir() for entry in folder.iterdir()
    )
    for entry in candidates:
        if fnmatch(entry.name.lower(), pattern.lower()) and entry.is_dir() == want_dir:
            return entry
    return None


def find_official_layout(root: Path) -> list[SplitFiles]:
    """The splits of the official layout found under `root` (empty when it is not one).

    A split whose image folder is there without its annotation file, or the other way
    round, is an error: reading the rest would quietly drop that whole split.
    """
    found = []
    for split, folder_name, annotation_pattern in OFFICIAL_PARTS:
        images = _find_near(root, folder_name, want_dir=True)
        annotations = _find_near(root, annotation_pattern, want_dir=False)
        if images and annotations:
            found.append(SplitFiles(split, images, annotations))
        elif images or annotations:
            fault = (
                f"official TSRD layout with the {split} split incomplete: found "
                f"{images or annotations} but no "
                f"{'annotation file ' + annotation_pattern if images else folder_name + '/'} "
                "at the top or one folder down"
            )
            raise DataError(root, None, fault)
    return found


def read_official(
    splits: list[SplitFiles], *, num_classes: int, on_error: str
) -> tuple[list[SignRecord], list[DataError]]:
    records: list[SignRecord] = []
    skipped: list[DataError] = []
    for split_files in splits:
        split_records, split_skipped = read_annotations(
            split_files.annotations,
            split_files.images,
            num_classes=num_classes,
            on_error=on_error,
            split=split_files.split,
        )
        records += split_records
        skipped += split_skipped
    return records, skipped
