"""Wall time of Greedy-DIB against end-to-end SGD for the same epochs, measured in one run:
each method trains in turn on the same data, one after the other (never side by side: two
trainings on two cores slow each other down ten-fold), and the training passes are timed
(data loading included; the per-epoch evaluation is not, since greedy training evaluates
once per module).

    .venv/bin/python bench/train_time.py --data ../shared/data/ctsrd-real \\
        --data ../shared/data/tt100k-crops --epochs 1 --image-size 64

Greedy phases are counted as trained: the sequential schedule's K modules and decoder each
get --epochs, the simultaneous schedule's one phase gets --epochs, like SGD.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "sgd": ["--method", "sgd"],
    "greedy-dib sequential": ["--method", "greedy-dib", "--schedule", "sequential"],
    "greedy-dib simultaneous": ["--method", "greedy-dib", "--schedule", "simultaneous"],
    # The configuration that meets both cost bars of issue 9 (BENCHMARKS.md section 4).
    "greedy-dib sequential, lean split, cached prefix": [
        *("--method", "greedy-dib", "--schedule", "sequential"),
        *("--modules", "lean", "--cache-prefix"),
    ],
}


def train_seconds(flags: list[str], args: argparse.Namespace, out: Path) -> float:
    command = [sys.executable, "-m", "app", "train", *flags, "--out", str(out)]
    for data in args.data:
        command += ["--data", str(data)]
    command += ["--epochs", str(args.epochs), "--image-size", str(args.image_size)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(out / "history.csv") as file:
        return sum(float(row["train_pass_seconds"]) for row in csv.DictReader(file))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        seconds = {
            name: train_seconds(flags, args, Path(scratch) / name.replace(" ", "-"))
            for name, flags in VARIANTS.items()
        }
    print(f"{args.epochs} epoch(s) per phase, {args.image_size} px\n")
    print("| method | training passes (s) | / SGD |\n|---|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.0f} | {value / seconds['sgd']:.2f} |")


if __name__ == "__main__":
    main()
