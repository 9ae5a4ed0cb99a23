"""Training methods side by side: same data, split, augmentation and epoch budget, several
seeds. Prints mean ± std of each figure and writes the table as Markdown (and JSON), and
plots the first-layer gradient norm of each module for SGD and Greedy-DIB.

    .venv/bin/python bench/train_compare.py --data ../shared/data/ctsrd-real --seeds 0,1,2 \\
        --epochs 30 --out runs/compare
    .venv/bin/python bench/train_compare.py --data runs/tsrd-official-sample --seeds 0,1,2 \\
        --epochs 30 --out runs/compare-official -- --split official

A variant is a method, optionally with a schedule (`greedy-dib:simultaneous`), or a name
with any flags (`beta0.1=--method greedy-dib --beta 0.1`, given with --variant). Each run is a
normal `greedysign train` run folder under --out (finished runs are reused, so an
interrupted comparison continues where it stopped). Extra arguments after `--` go to every
`greedysign train` call. With several collections (TSRD, TT100K) each gets its own columns.
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
    ("rejection_rate", "rejected"),
    ("novel_accuracy", "novel acc."),
    ("box_iou", "box IoU"),
    ("mask_miou", "mask mIoU"),
    ("train_seconds", "train time (s)"),
)


def variant_flags(variant: str, named: dict[str, str]) -> list[str]:
    if variant in named:
        return named[variant].split()
    method, _, schedule = variant.partition(":")
    return ["--method", method, *(["--schedule", schedule] if schedule else [])]


def run_one(variant: str, seed: int, args: argparse.Namespace, extra: list[str]) -> dict:
    out = args.out / f"{variant.replace(':', '-')}-seed{seed}"
    metrics_file = out / "metrics.json"
    if not metrics_file.is_file():
        command = [sys.executable, "-m", "app", "train"]
        for data in args.data:
            command += ["--data", str(data)]
        command += [
            *variant_flags(variant, args.named),
            *("--seed", str(seed), "--epochs", str(args.epochs), "--out", str(out)),
            *extra,
        ]
        if (out / "checkpoint.pth").is_file():
            command.append("--resume")
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return flatten(json.loads(metrics_file.read_text()))


def flatten(metrics: dict) -> dict:
    """The headline figures of a run, each collection's under 'origin/figure'."""
    row = {key: metrics.get(key) for key, _ in COLUMNS}
    row["novel_accuracy"] = (metrics.get("novel") or {}).get("accuracy")
    for origin, part in (metrics.get("datasets") or {}).items():
        for key in ("accuracy", "macro_accuracy", "rejection_rate"):
            row[f"{origin}/{key}"] = part.get(key)
    row["wall_seconds"] = metrics.get("wall_seconds")
    return row


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(results: dict[str, list[dict]]) -> str:
    keys = [key for key, _ in COLUMNS]
    keys += sorted({k for runs in results.values() for run in runs for k in run if "/" in k})
    labels = dict(COLUMNS)
    shown = [
        k for k in keys if any(run.get(k) is not None for runs in results.values() for run in runs)
    ]
    lines = [
        "| variant | runs | " + " | ".join(labels.get(k, k) for k in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for variant, runs in results.items():
        cells = []
        for key in shown:
            values = [run[key] for run in runs if run.get(key) is not None]
            if not values:
                cells.append("—")
            elif key == "train_seconds":
                cells.append(f"{statistics.mean(values):.0f}")
            else:
                cells.append(mean_std([100 * v for v in values]))
        lines.append(f"| {variant} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_gradient_health(out: Path, seed: int, path: Path) -> None:
    """First-layer gradient norm per module over training: SGD and Greedy-DIB, one seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, method in zip(axes, ("sgd", "greedy-dib"), strict=True):
        with open(out / f"{method}-seed{seed}" / "history.csv") as file:
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
    parser.add_argument("--data", type=Path, action="append", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--variants",
        default=",".join(METHODS),
        help="comma-separated: methods, method:schedule, or names given with --variant",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help='a named variant, e.g. "beta0.1=--method greedy-dib --beta 0.1"',
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = parser.parse_args(argv)
    args.named = dict(item.split("=", 1) for item in args.variant)

    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    # Seed by seed, so that an interrupted comparison has every variant at the same seeds.
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for seed in seeds:
        for variant in variants:
            results[variant].append(run_one(variant, seed, args, extra))
    markdown = table(results)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(markdown + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if {"sgd", "greedy-dib"} <= set(variants):
        plot_gradient_health(args.out, seeds[0], args.out / "gradient_health.png")
        print(f"gradient plot: {args.out / 'gradient_health.png'}")


if __name__ == "__main__":
    main()
