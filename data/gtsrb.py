"""Reader for the German Traffic Sign Recognition Benchmark (GTSRB).

An annotation file is a `;`-separated CSV with the header
`Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId` (columns found by name, so the
release's extra or reordered columns are fine). Any such CSV at the top of the dataset
folder or one folder down is read (the release keeps one `GT-000NN.csv` per class folder);
its images sit beside it or in an `images/` folder next to it. GTSRB photographs each sign
several times along a track, near copies: a record's `group` is its track, so that a split
keeps the track on one side, and `split_gtsrb` cuts a folder into training and test sides
the same way.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import replace
from pathlib import Path

from data.classes import class_names
from data.records import DataError, SignRecord
from data.validate import annotation_lines, checked_record, collect, parse_int, split_fields

COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")


def _column_names(header: str) -> list[str]:
    names = [name.strip() for name in header.strip().split(";")]
    return names[:-1] if names[-1] == "" else names


def _header(csv_file: Path) -> list[str]:
    """The column names on the first line (read no further than a header can reach)."""
    try:
        with csv_file.open(encoding="utf-8-sig", errors="replace") as stream:
            return _column_names(stream.readline(4096))
    except OSError as error:
        raise DataError(csv_file, 1, f"cannot read the header ({error})") from None


def find_annotation_files(root: Path) -> list[Path]:
    """Regular CSV files under `root` (top or one folder down) whose header starts with
    `Filename`; other CSVs (provenance tables and the like), and anything named *.csv that is
    not a regular file (a folder, a FIFO, a broken or looping link), are left alone."""
    candidates = sorted(root.glob("*.csv")) + sorted(root.glob("*/*.csv"))
    return [path for path in candidates if path.is_file() and _header(path)[:1] == ["Filename"]]


def read_annotation_file(
    csv_file: Path, *, num_classes: int, on_error: str
) -> tuple[list[SignRecord], list[DataError]]:
    lines = annotation_lines(csv_file)
    header_line, header_text = next(lines)
    header = _column_names(header_text)
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        fault = f"header lacks {', '.join(missing)} (needs {';'.join(COLUMNS)})"
        raise DataError(csv_file, header_line, fault)
    column = {name: header.index(name) for name in COLUMNS}
    rows = list(lines)
    if not rows:
        raise DataError(csv_file, header_line, "no annotation rows after the header")
    image_dir = csv_file.parent / "images"
    if not image_dir.is_dir():
        image_dir = csv_file.parent
    tracks = _track_keys(csv_file.parent / "provenance.csv")

    def build(numbered_line: tuple[int, str]) -> SignRecord:
        line, text = numbered_line
        where = {"source_file": csv_file, "line": line}
        fields = split_fields(text, header, **where)
        width, height, x1, y1, x2, y2, class_id = (
            parse_int(fields[column[name]], name, **where) for name in COLUMNS[1:]
        )
        name = fields[column["Filename"]]
        record = checked_record(
            image_dir / name, class_id, (x1, y1, x2, y2), (width, height), num_classes, **where
        )
        # The release names files alike in every class folder: the folder is part of the key.
        group = f"gtsrb:{csv_file.parent}:{_track_key(name, tracks)}"
        return replace(record, origin="gtsrb", group=group)

    return collect(rows, build, on_error)


def read_gtsrb(
    csv_files: list[Path], *, num_classes: int, on_error: str
) -> tuple[list[SignRecord], list[DataError]]:
    records: list[SignRecord] = []
    skipped: list[DataError] = []
    for csv_file in csv_files:
        file_records, file_skipped = read_annotation_file(
            csv_file, num_classes=num_classes, on_error=on_error
        )
        records += file_records
        skipped += file_skipped
    return records, skipped


def split_gtsrb(root: Path | str, out: Path | str, test_every: int) -> tuple[int, int]:
    """Write the GTSRB folder at `root` (one annotation CSV) as two, OUT/train and OUT/test,
    each its rows of the CSV and an `images` link to the source's images; one track in
    `test_every` on the test side. GTSRB photographs each sign several times along a track,
    near copies, so a track's images stay on one side (`_track_key`). A track's side comes
    from a hash of its key, so it never moves when other tracks join. Returns (train images,
    test images). A row the loader would refuse is a DataError naming its line, and a side
    left empty (too few tracks for `test_every`) a ValueError, before anything is written."""
    if test_every < 2:
        raise ValueError(f"test_every must be 2 or more, not {test_every}")
    root = Path(root)
    csv_files = find_annotation_files(root)
    if len(csv_files) != 1:
        raise DataError(root, None, f"{len(csv_files)} annotation CSVs; split one at a time")
    csv_file = csv_files[0]
    # Rows are copied as they are: checked by the loader's own reader first, a row it refuses
    # stops the split here rather than failing each later read of the side it went to.
    read_annotation_file(csv_file, num_classes=len(class_names("gtsrb")), on_error="raise")
    header_line, *rows = [text for _, text in annotation_lines(csv_file)]
    tracks = _track_keys(root / "provenance.csv")
    sides: dict[str, list[str]] = {"train": [], "test": []}
    track_keys = set()
    for row in rows:
        name = row.split(";", 1)[0].strip()
        track_key = _track_key(name, tracks)
        track_keys.add(track_key)
        digest = int(hashlib.sha1(track_key.encode()).hexdigest(), 16)
        sides["test" if digest % test_every == 0 else "train"].append(row)
    for side, side_rows in sides.items():
        if not side_rows:
            raise ValueError(
                f"{root}: with one track in {test_every} on the test side, its "
                f"{len(track_keys)} tracks leave the {side} side empty"
            )
    image_dir = csv_file.parent / "images"
    if not image_dir.is_dir():
        image_dir = csv_file.parent
    for side, side_rows in sides.items():
        folder = Path(out) / side
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "annotations.csv").write_text("\n".join([header_line, *side_rows]) + "\n")
        link = folder / "images"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(image_dir.resolve(), target_is_directory=True)
    return len(sides["train"]), len(sides["test"])


def _track_key(file_name: str, tracks: dict[str, str]) -> str:
    """The track of a GTSRB photo: provenance.csv's track_key where the folder has one (the
    shared set's), else the release's file name prefix (TTTTT_NNNNN.ppm), else the file."""
    return tracks.get(file_name) or (file_name.split("_")[0] if "_" in file_name else file_name)


def _track_keys(provenance: Path) -> dict[str, str]:
    """file name -> track key, from a provenance table with those columns (else none)."""
    if not provenance.is_file():
        return {}
    with provenance.open(encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.DictReader(stream))
    if not rows or not {"filename", "track_key"} <= rows[0].keys():
        return {}
    return {row["filename"]: row["track_key"] for row in rows}
