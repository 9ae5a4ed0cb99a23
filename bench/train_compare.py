"""Greedy-DIB, greedy-CE and end-to-end SGD side by side: same data, split, augmentation and
epoch budget, several seeds. Prints mean ± std of accuracy, macro accuracy, box IoU, mask mIoU
and training time, writes the table as Markdown, and plots the first-layer gradient norm of
each module for SGD and Greedy-DIB.

    .venv/bin/python bench/train_compare.py --data ../shared/data/ctsrd-real --seeds 0,1,2 \\
        --epochs 30 --out runs/compare

Each run is a normal `greedysign train` run folder under --out (finished runs are reused, so
an interrupted comparison continues where it stopped). Extra arguments after `--` go to
every `greedysign train` call.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

METHODS = ("greedy-dib", "greedy-ce", "sgd")
COLUMNS = (
    ("accuracy", "accuracy"),
    ("macro_accuracy", "macro acc."),
    ("box_iou", "box IoU"),
    ("mask_miou", "mask mIoU"),
    ("train_seconds", "train time (s)"),
)


def run_one(method: str, seed: int, args: argparse.Namespace, extra: list[str]) -> dict:
    out = args.out / f"{method}-seed{seed}"
    metrics_file = out / "metrics.json"
    if not metrics_file.is_file():
        command = [
            sys.executable,
            "-m",
            "app",
            "train",
            "--data",
            str(args.data),
            "--method",
            method,
            "--seed",
            str(seed),
            "--epochs",
            str(args.epochs),
            "--out",
            str(out),
            *extra,
        ]
        if (out / "checkpoint.pth").is_file():
            command.append("--resume")
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads(metrics_file.read_text())


def mean_std(percentages: list[float]) -> str:
    if len(percentages) == 1:
        return f"{percentages[0]:.2f}"
    return f"{statistics.mean(percentages):.2f} ± {statistics.stdev(percentages):.2f}"


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        "| method | runs | " + " | ".join(label for _, label in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for method, runs in results.items():
        cells = []
        for key, _ in COLUMNS:
            values = [run[key] for run in runs]
            if key == "train_seconds":
                cells.append(f"{statistics.mean(values):.0f}")
            else:
                cells.append(mean_std([100 * v for v in values]))
        lines.append(f"| {method} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_gradient_health(args: argparse.Namespace, seed: int, path: Path) -> None:
    """First-layer gradient norm per module over training: SGD and Greedy-DIB, one seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, method in zip(axes, ("sgd", "greedy-dib"), strict=True):
        with open(args.out / f"{method}-seed{seed}" / "history.csv") as file:
            rows = list(csv.DictReader(file))
        keys = sorted(
            (k for k in rows[0] if k.startswith("grad_norm_")),
            key=lambda k: int(k.rsplit("_", 1)[1]),
        )
        for key in keys:
            values = [float(row[key]) if row[key] else math.nan for row in rows]
            ax.plot(
                range(1, len(rows) + 1), values, marker=".", label=f"module {key.rsplit('_', 1)[1]}"
            )
        for i in range(1, len(rows)):
            if rows[i]["phase"] != rows[i - 1]["phase"]:
                ax.axvline(i + 0.5, color="grey", linestyle=":", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{method}: first-layer gradient norm per module")
        ax.set_xlabel("epoch (greedy: module after module, then heads)")
        ax.legend()
    axes[0].set_ylabel("mean gradient norm")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = parser.parse_args(argv)

    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    results = {m: [run_one(m, s, args, extra) for s in seeds] for m in methods}
    markdown = table(results)
    print(markdown)
    (args.out / "results.md").write_text(markdown + "\n")
    if {"sgd", "greedy-dib"} <= set(methods):
        plot_gradient_health(args, seeds[0], args.out / "gradient_health.png")
        print(f"gradient plot: {args.out / 'gradient_health.png'}")


if __name__ == "__main__":
    main()
