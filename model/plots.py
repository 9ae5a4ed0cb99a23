"""Plots of a training run: curves, first-layer gradient norms, confusion matrix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402


def _steps(history: list[dict[str, Any]]) -> list[int]:
    return list(range(1, len(history) + 1))


def _phase_boundaries(ax, history: list[dict[str, Any]]) -> None:
    """Dotted lines where one phase (module) hands over to the next."""
    for i in range(1, len(history)):
        if history[i]["phase"] != history[i - 1]["phase"]:
            ax.axvline(i + 0.5, color="grey", linestyle=":", linewidth=0.8)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Training loss terms and train/test accuracy per epoch, across all phases."""
    steps = _steps(history)
    figure, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(12, 4))
    for key, label in (
        ("train_total", "total"),
        ("train_ce", "CE"),
        ("train_mask", "mask"),
        ("train_reg", "info term"),
    ):
        loss_ax.plot(steps, [row[key] for row in history], label=label)
    for key, label in (
        ("train_accuracy", "train accuracy"),
        ("test_accuracy", "test accuracy"),
        ("test_box_iou", "test box IoU"),
    ):
        accuracy_ax.plot(steps, [row[key] for row in history], label=label)
    for ax, title in ((loss_ax, "loss"), (accuracy_ax, "accuracy / IoU")):
        _phase_boundaries(ax, history)
        ax.set_xlabel("epoch (all phases, in order)")
        ax.set_title(title)
        ax.legend()
    accuracy_ax.set_ylim(0, 1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_gradients(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Mean first-layer gradient norm of each module per epoch (log scale)."""
    steps = _steps(history)
    keys = sorted(
        (k for k in history[0] if k.startswith("grad_norm_")),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    figure, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        values = [row[key] for row in history]
        if any(not math.isnan(v) for v in values):
            ax.plot(steps, values, marker=".", label=f"module {key.rsplit('_', 1)[1]}")
    _phase_boundaries(ax, history)
    ax.set_yscale("log")
    ax.set_xlabel("epoch (all phases, in order)")
    ax.set_ylabel("first-layer gradient norm")
    ax.set_title(title or "first-layer gradient norm per module")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: Path) -> None:
    """Row-normalised confusion matrix (true class down, predicted across)."""
    rows = confusion[: len(class_names)]
    normalised = [[v / max(1, sum(row)) for v in row] for row in rows]
    size = max(6, len(class_names) * 0.16)
    figure, ax = plt.subplots(figsize=(size, size))
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, [str(i) for i in ticks], fontsize=5)
    ax.set_yticks(ticks, [f"{i} {name[:22]}" for i, name in enumerate(class_names)], fontsize=5)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion (row-normalised)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
