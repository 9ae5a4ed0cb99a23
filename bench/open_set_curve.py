"""The open-set trade-off of trained runs: accuracy on known signs against the share of unknown
signs and no-sign patches rejected, as the "unknown sign" threshold moves (model/open_set.py).
Read from each run's `metrics.json` (`operating_points`, scored on the held-out side at every
threshold of the grid when the run finished); draws one curve per run and prints a table.

    .venv/bin/python bench/open_set_curve.py runs/ship-gdib runs/ship-sgd \\
        --out docs/open-set-curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Thresholds shown in the printed table (the curve has them all).
TABLE_THRESHOLDS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def load(run: Path) -> tuple[str, dict]:
    metrics = json.loads((run / "metrics.json").read_text())
    if not metrics.get("operating_points"):
        raise SystemExit(f"{run}/metrics.json has no operating points (a run without open set?)")
    return f"{run.name} ({metrics['method']})", metrics


def plot(runs: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(7, 5))
    for name, metrics in runs.items():
        points = [p for p in metrics["operating_points"] if p["accuracy"] is not None]
        ax.plot(
            [100 * p["rejection_rate"] for p in points],
            [100 * p["accuracy"] for p in points],
            marker=".",
            label=name,
        )
        ax.scatter(
            [100 * metrics["rejection_rate"]],
            [100 * metrics["accuracy"]],
            marker="*",
            s=160,
            zorder=3,
            label=f"chosen threshold {metrics['threshold']:.2f}",
        )
    ax.set_xlabel("unknown signs and no-sign patches rejected (%)")
    ax.set_ylabel("known signs read correctly (%)")
    ax.set_xlim(90, 100.5)
    ax.set_ylim(90, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    ax.set_title("open set: accuracy against rejection as the threshold moves")
    figure.tight_layout()
    figure.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="write the figure here (PNG)")
    args = parser.parse_args()
    runs = dict(load(run) for run in args.runs)
    print("| threshold | " + " | ".join(f"{name}: accuracy / rejected" for name in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for threshold in TABLE_THRESHOLDS:
        cells = []
        for metrics in runs.values():
            point = next(p for p in metrics["operating_points"] if p["threshold"] == threshold)
            cells.append(f"{100 * point['accuracy']:.2f} / {100 * point['rejection_rate']:.2f}")
        print(f"| {threshold:.2f} | " + " | ".join(cells) + " |")
    if args.out:
        plot(runs, args.out)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
