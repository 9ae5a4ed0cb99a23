"""Rebuild the TSRD release's own layout for the images of the shared sample, so that the
paper's protocol (`greedysign train --split official`) can be run without the release.

The shared sample (`../shared/data/ctsrd-real`) keeps each distinct image once, with a
`provenance.csv` naming its original split and path and every byte-identical copy the release
holds of it, in which split and under which name. This writes, for each sample image, the
file and all its copies where the release has them:

    OUT/tsrd-train/*.png  OUT/TSRD-Test/*.png
    OUT/TSRD-Train Annotation/TsignRecgTrain4170Annotation.txt
    OUT/TSRD-Test Annotation/TsignRecgTest1994Annotation.txt

Copies get the kept image's annotation line (the release's own lines for copies differ by a
few pixels at most). With the release itself, skip this and give its folder to --data.

    .venv/bin/python bench/tsrd_official_sample.py --out runs/tsrd-official-sample
    .venv/bin/greedysign train --data runs/tsrd-official-sample --split official ...
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
from pathlib import Path

FOLDERS = {"train": "tsrd-train", "test": "TSRD-Test"}
ANNOTATIONS = {
    "train": "TSRD-Train Annotation/TsignRecgTrain4170Annotation.txt",
    "test": "TSRD-Test Annotation/TsignRecgTest1994Annotation.txt",
}


def build(sample: Path, out: Path) -> dict[str, int]:
    """Write the layout; return the number of files per split."""
    lines = {
        line.split(";", 1)[0]: line
        for line in (sample / "annotations.txt").read_text().splitlines()
        if line.strip()
    }
    written: dict[str, list[str]] = {split: [] for split in FOLDERS}
    with open(sample / "provenance.csv", newline="") as file:
        for row in csv.DictReader(file):
            copies = [row["original_split"] + ":" + row["filename"]]
            copies += [c for c in row["byte_identical_copies_in_dataset"].split("|") if c]
            source = sample / "images" / row["filename"]
            fields = lines[row["filename"]].split(";", 1)[1]
            for copy in copies:
                split, name = copy.split(":", 1)
                target = out / FOLDERS[split] / name
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(source, target)
                written[split].append(f"{name};{fields}")
    for split, annotation in ANNOTATIONS.items():
        path = out / annotation
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(sorted(written[split])) + "\n")
    return {split: len(names) for split, names in written.items()}


def _link_or_copy(source: Path, target: Path) -> None:
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def main() -> None:
    # The whole docstring, laid out as written: its first sentence runs over two lines.
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sample",
        type=Path,
        default=Path("../shared/data/ctsrd-real"),
        help="the shared sample, with provenance.csv (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write the layout in")
    args = parser.parse_args()
    counts = build(args.sample, args.out)
    print(f"wrote {counts['train']} train and {counts['test']} test files to {args.out}")


if __name__ == "__main__":
    main()
