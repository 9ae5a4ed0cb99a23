"""The open-set answer: a known class, "unknown sign" or "no sign".

A model of a dataset with n classes has n + 2 outputs: the classes, then "unknown sign"
(id n) and "no sign" (id n + 1), trained on signs outside the n classes and on patches with
no sign (data/classes.py). Its answer is the most probable output, except that a known
class whose probability is below `threshold` becomes "unknown sign": a sign the model is
unsure of is more likely one it was never taught than a hard case of one it knows.

The threshold is chosen on the held-out side after training (`choose_threshold`; there is
no third side to spare) and stored with the model. Figures scored at it on the same images
read a little high, so `cross_fitted` also scores each half of them at the threshold chosen
on the other half. A model trained without the two extra outputs (n outputs) still gets the
threshold's "unknown sign".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Answers:
    """Per image: `label` the answer (0..n-1 a class, n unknown sign, n+1 no sign),
    `confidence` its probability (for a threshold rejection: 1 - the best class's
    probability), `known_ids` / `known_probabilities` the top known classes."""

    label: Tensor  # [N] long
    confidence: Tensor  # [N] float
    known_ids: Tensor  # [N, k] long
    known_probabilities: Tensor  # [N, k] float


def answer(probabilities: Tensor, num_known: int, threshold: float, top_k: int = 1) -> Answers:
    """Answers from softmax outputs [N, n] or [N, n + 2]."""
    known = probabilities[:, :num_known]
    k = max(1, min(top_k, num_known))
    known_probabilities, known_ids = known.topk(k, dim=1)
    best = probabilities.argmax(dim=1)
    confidence = probabilities.gather(1, best[:, None])[:, 0]
    unsure = (best < num_known) & (known_probabilities[:, 0] < threshold)
    label = torch.where(unsure, torch.full_like(best, num_known), best)
    confidence = torch.where(unsure, 1 - known_probabilities[:, 0], confidence)
    return Answers(label, confidence, known_ids, known_probabilities)


def answers_at(
    best: np.ndarray, best_known_probability: np.ndarray, num_known: int, threshold: float
) -> np.ndarray:
    """`answer`'s labels from the two per-image numbers it needs (argmax over every output,
    and the top known class's probability): for sweeping the threshold over a stored run."""
    unsure = (best < num_known) & (best_known_probability < threshold)
    return np.where(unsure, num_known, best)


def operating_points(
    labels: np.ndarray,
    best: np.ndarray,
    best_known_probability: np.ndarray,
    num_known: int,
    thresholds: np.ndarray,
) -> list[dict[str, float | None]]:
    """Per threshold: accuracy on images of known classes (an open-set answer is wrong there)
    and the rejection rate (share of unknown-sign and no-sign images answered with either)."""
    known = (labels >= 0) & (labels < num_known)
    open_set = labels >= num_known
    points = []
    for threshold in thresholds:
        answers = answers_at(best, best_known_probability, num_known, float(threshold))
        accuracy = float((answers[known] == labels[known]).mean()) if known.any() else None
        rejected = answers[open_set] >= num_known
        rejection = float(rejected.mean()) if open_set.any() else None
        points.append(
            {"threshold": float(threshold), "accuracy": accuracy, "rejection_rate": rejection}
        )
    return points


THRESHOLD_GRID = np.round(np.arange(0.0, 1.0001, 0.02), 2)
# The known-sign accuracy the threshold may cost, at most: a user first wants the signs the
# model knows read right, then the others refused.
MAX_ACCURACY_COST = 0.01


def choose_threshold(
    labels: np.ndarray, best: np.ndarray, best_known_probability: np.ndarray, num_known: int
) -> float:
    """The threshold on `THRESHOLD_GRID` that rejects the most unknown-sign and no-sign
    images while costing at most `MAX_ACCURACY_COST` of known-sign accuracy (against no
    threshold); the smallest such on a tie. Without images of both kinds, 0."""
    points = operating_points(labels, best, best_known_probability, num_known, THRESHOLD_GRID)
    if points[0]["rejection_rate"] is None or points[0]["accuracy"] is None:
        return 0.0
    floor = points[0]["accuracy"] - MAX_ACCURACY_COST
    allowed = [p for p in points if p["accuracy"] >= floor - 1e-9]
    return max(allowed, key=lambda p: (p["rejection_rate"], -p["threshold"]))["threshold"]


def cross_fitted(
    labels: np.ndarray,
    best: np.ndarray,
    best_known_probability: np.ndarray,
    num_known: int,
    seed: int = 0,
) -> dict[str, float | list[float] | None]:
    """Known-sign accuracy and rejection rate at a threshold never chosen on the images it
    scores: the images are cut in two halves at random (seeded), and each is answered at the
    threshold `choose_threshold` picks on the other. What a threshold chosen on held-out
    images does on images it has not seen; `thresholds` are the two halves' picks."""
    order = np.random.default_rng(seed).permutation(len(labels))
    first = np.zeros(len(labels), dtype=bool)
    first[order[: len(labels) // 2]] = True
    answers = np.empty_like(best)
    thresholds = []
    for scored in (first, ~first):
        chooser = ~scored
        threshold = choose_threshold(
            labels[chooser], best[chooser], best_known_probability[chooser], num_known
        )
        answers[scored] = answers_at(
            best[scored], best_known_probability[scored], num_known, threshold
        )
        thresholds.append(threshold)
    known = (labels >= 0) & (labels < num_known)
    open_set = labels >= num_known
    return {
        "accuracy": float((answers[known] == labels[known]).mean()) if known.any() else None,
        "rejection_rate": float((answers[open_set] >= num_known).mean())
        if open_set.any()
        else None,
        "thresholds": thresholds,
    }
