"""Figures of the information analysis (model/analysis.py), one figure per file, PNG."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from model.analysis import Convergence, LayerInformation

_DPI = 110


def _labels(layers: list[str]) -> list[str]:
    return [f"T{i + 1} {name}" for i, name in enumerate(layers)]


_MAX_WRITTEN_COLUMNS = 24  # snapshots up to which the convergence cells show their values


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path


def _caption(figure, text: str, width: int = 110) -> None:
    figure.text(0.01, 0.01, textwrap.fill(text, width), fontsize=7.5, va="bottom", ha="left")


def plot_cross_mi(info: LayerInformation, path: Path, normalized: bool = False) -> Path:
    """Heatmap of I_α(T_i; T_j) with H_α(T_i) on the diagonal, values written in the cells;
    `normalized`: (I - chance) / (sqrt(self_i self_j) - chance) instead, 0 at chance."""
    matrix = _array(info.cross_mi_normalized if normalized else info.cross_mi)
    size = 3.0 + 0.55 * len(info.layers)
    figure, ax = plt.subplots(figsize=(size + 1.2, size))
    if normalized:
        image = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0)
        figure.colorbar(image, ax=ax, label="0 = chance, 1 = a layer with itself")
        title = "I_α(T_i; T_j) above chance: (I − chance) / (√(I_ii I_jj) − chance)"
    else:
        image = ax.imshow(matrix, cmap="viridis")
        figure.colorbar(image, ax=ax, label="bits")
        title = "I_α(T_i; T_j) in bits, H_α(T_i) on the diagonal"
    labels = _labels(info.layers)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    if len(labels) <= 12:
        low, high = np.nanmin(matrix), np.nanmax(matrix)
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                colour = "black" if value > low + 0.6 * (high - low) else "white"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_title(
        f"{title}\nα = {info.settings.alpha}, {info.probe_images} probe images "
        f"(at most log2 n = {np.log2(info.probe_images):.2f} bits)",
        fontsize=9,
    )
    return _save(figure, path)


def _array(rows: list[list[float | None]]) -> np.ndarray:
    return np.asarray([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def plot_information_plane(info: LayerInformation, path: Path) -> Path:
    """Each layer at (I_α(X; T), I_α(T; Y)), joined in network order."""
    figure, ax = plt.subplots(figsize=(6.5, 5))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(info.layers)))
    ax.plot(info.mi_input, info.mi_label, color="grey", linewidth=0.8, zorder=1)
    ax.scatter(info.mi_input, info.mi_label, c=colours, s=60, zorder=2)
    for x, y, label in zip(info.mi_input, info.mi_label, _labels(info.layers), strict=True):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axhline(info.entropy_label, color="grey", linestyle=":", linewidth=0.8)
    ax.text(ax.get_xlim()[0], info.entropy_label, " H(Y)", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("I_α(X; T)  [bits]")
    ax.set_ylabel("I_α(T; Y)  [bits]")
    ax.set_title(f"information plane, {info.probe_images} probe images, α = {info.settings.alpha}")
    return _save(figure, path)


def plot_convergence(convergence: Convergence, path: Path) -> Path:
    """Layers x snapshots heatmap of I_α(T_i at e; T_i at the end) between its chance level
    (0: samples shuffled) and the final representation with itself (1); the scale reaches
    past 1 where a snapshot does (by this estimator it may), and a small grid has its values
    written in."""
    fraction = _array(convergence.mi_to_final_normalized)
    epochs = [s["global_epoch"] for s in convergence.snapshots]
    width = min(18.0, 4.0 + 0.35 * len(epochs))
    figure, ax = plt.subplots(figsize=(width, 2.6 + 0.45 * len(convergence.layers)))
    # Past 1 where a snapshot is (by this estimator it may be), at most 2: a layer whose
    # ceiling sits just above chance would otherwise stretch the scale and darken the rest.
    top = min(2.0, max(1.0, float(np.nanmax(fraction, initial=1.0))))
    image = ax.imshow(fraction, cmap="magma", vmin=0.0, vmax=top, aspect="auto")
    figure.colorbar(image, ax=ax, label="I(T_i at e; T_i at end): 0 = chance, 1 = final")
    ax.set_yticks(range(len(convergence.layers)), _labels(convergence.layers))
    step = max(1, len(epochs) // 30)
    ax.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]], fontsize=8)
    ax.set_xlabel("global epoch of the snapshot (all phases in training order)")
    written = len(epochs) <= _MAX_WRITTEN_COLUMNS
    for i, row in enumerate(convergence.status):
        for j, status in enumerate(row):
            words = [status] if status == "init" else []
            if written and not np.isnan(fraction[i, j]):
                words.append(f"{fraction[i, j]:.2f}")
            if words:
                colour = "black" if np.nan_to_num(fraction[i, j]) > 0.6 * top else "white"
                ax.text(j, i, "\n".join(words), ha="center", va="center", fontsize=6, color=colour)
    phases = [s["phase"] for s in convergence.snapshots]
    for j in range(1, len(phases)):
        if phases[j] != phases[j - 1]:
            ax.axvline(j - 0.5, color="white", linewidth=1.2)
    for j, phase in enumerate(phases):
        if j == 0 or phase != phases[j - 1]:
            ax.text(j - 0.4, -0.7, phase, fontsize=7, va="bottom", ha="left", clip_on=False)
    ax.set_title(
        f"convergence of each layer to its final representation ({convergence.training} run)",
        fontsize=10,
        pad=22,
    )
    _caption(figure, convergence.epoch_meaning + " 'init' marks a module still at init.")
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(path, dpi=_DPI, bbox_inches="tight")  # the title and the bar's label whole
    plt.close(figure)
    return path


def plot_trajectories(convergence: Convergence, final: LayerInformation, path: Path) -> Path:
    """Each layer's path through the information plane over the snapshots; hollow markers
    where its module was still at init, a star at the final encoder."""
    figure, ax = plt.subplots(figsize=(7.5, 6.2))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(convergence.layers)))
    labels = _labels(convergence.layers)
    for i, colour in enumerate(colours):
        xs, ys = convergence.mi_input[i], convergence.mi_label[i]
        ax.plot(xs, ys, color=colour, linewidth=1.0, alpha=0.8, label=labels[i])
        at_init = [s == "init" for s in convergence.status[i]]
        for x, y, init in zip(xs, ys, at_init, strict=True):
            ax.scatter(
                x, y, s=14, facecolors="none" if init else colour, edgecolors=colour, zorder=2
            )
        ax.scatter(xs[0], ys[0], marker="o", s=50, facecolors="none", edgecolors="black")
        ax.scatter(
            final.mi_input[i], final.mi_label[i], marker="*", s=160, color=colour,
            edgecolors="black", zorder=3,
        )  # fmt: skip
    ax.set_xlabel("I_α(X; T)  [bits]")
    ax.set_ylabel("I_α(T; Y)  [bits]")
    ax.set_title(
        f"information-plane trajectories ({convergence.training} run); ○ first snapshot, ★ final",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    _caption(figure, convergence.epoch_meaning + " Hollow markers: module still at init.")
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=_DPI)
    plt.close(figure)
    return path
