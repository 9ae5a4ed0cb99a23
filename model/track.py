"""Following signs from frame to frame: SORT's shape (`update(detections) -> tracks`), kept
small.

Each track keeps its last box and a constant-velocity estimate of how its box moves per
frame (x1, y1, x2, y2 each: a sign grows as the car nears it). On each frame:

1. every live track predicts its box (last box + velocity x frames since it was seen);
2. detections are assigned to tracks by IoU with the predicted boxes, one to one, the
   assignment of largest total IoU (`scipy.optimize.linear_sum_assignment`), pairs under
   `iou_threshold` refused;
3. what is left is assigned by centre distance (within `max_distance` times the boxes' mean
   side, sizes within a factor of 2): a small sign that moved further than its own size
   between sampled frames, before its track knows its velocity, still keeps its track;
4. an unmatched detection starts a new track (ids 1, 2, 3, ... per tracker); a track unseen
   for more than `max_age` frames has left the picture and ends.

The class of a track is a vote over its frames: each frame's answer (a class, or "unknown
sign") weighs its confidence, and the answer with the largest total wins, so one misread
frame does not relabel a sign whose other frames' confidences add up to more (one frame at
0.95 does outweigh three at 0.3). One tracker per video or stream; images need none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

VELOCITY_SMOOTHING = 0.5  # weight of the newest displacement in the velocity estimate


class Detected(Protocol):
    """What the tracker reads of a detection (model.detect.Detection has it)."""

    box: tuple[int, int, int, int]
    class_id: int | None
    class_name: str
    kind: str
    confidence: float


@dataclass
class Track:
    track_id: int
    box: np.ndarray  # float64 (x1, y1, x2, y2): the last matched box
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # per frame
    hits: int = 1  # frames it was matched in
    misses: int = 0  # frames since it was last matched
    # (kind, class_id) -> [total confidence, count, class_name]
    votes: dict[tuple[str, int | None], list] = field(default_factory=dict)

    def predicted(self) -> np.ndarray:
        return self.box + self.velocity * (self.misses + 1)

    def vote(self, detection: Detected) -> None:
        key = (detection.kind, detection.class_id)
        ballot = self.votes.setdefault(key, [0.0, 0, detection.class_name])
        ballot[0] += float(detection.confidence)
        ballot[1] += 1

    @property
    def label(self) -> tuple[str, int | None, str, float]:
        """(kind, class_id, class_name, mean confidence of the frames that voted for it)."""
        (kind, class_id), (total, count, name) = max(
            self.votes.items(), key=lambda item: item[1][0]
        )
        return kind, class_id, name, total / count

    def follow(self, detection: Detected) -> None:
        box = np.asarray(detection.box, np.float64)
        step = (box - self.box) / (self.misses + 1)
        self.velocity = (
            step
            if self.hits == 1
            else VELOCITY_SMOOTHING * step + (1 - VELOCITY_SMOOTHING) * self.velocity
        )
        self.box = box
        self.hits += 1
        self.misses = 0
        self.vote(detection)


class Tracker:
    def __init__(self, iou_threshold: float = 0.1, max_distance: float = 2.0, max_age: int = 5):
        if not 0 < iou_threshold <= 1 or max_distance < 0 or max_age < 0:
            raise ValueError("iou_threshold in (0, 1], max_distance and max_age >= 0")
        self.iou_threshold = iou_threshold
        self.max_distance = max_distance
        self.max_age = max_age
        self.tracks: list[Track] = []  # live tracks
        self.started = 0  # tracks started so far (the last id given)

    def update(self, detections: Sequence[Detected]) -> list[Track]:
        """One frame's detections -> the track of each, in the same order."""
        predicted = np.array([track.predicted() for track in self.tracks]).reshape(-1, 4)
        boxes = np.array([d.box for d in detections], np.float64).reshape(-1, 4)
        pairs = _assign(iou_matrix(predicted, boxes), self.iou_threshold)
        free_tracks = sorted(set(range(len(self.tracks))) - {t for t, _ in pairs})
        free_detections = sorted(set(range(len(detections))) - {d for _, d in pairs})
        if free_tracks and free_detections:
            closeness = _closeness(predicted[free_tracks], boxes[free_detections])
            pairs += [
                (free_tracks[t], free_detections[d])
                for t, d in _assign(closeness, 1 / (1 + self.max_distance))
            ]

        assigned: list[Track | None] = [None] * len(detections)
        for t, d in pairs:
            self.tracks[t].follow(detections[d])
            assigned[d] = self.tracks[t]
        matched = {t for t, _ in pairs}
        for t, track in enumerate(self.tracks):
            if t not in matched:
                track.misses += 1
        for d, detection in enumerate(detections):
            if assigned[d] is None:
                self.started += 1
                track = Track(self.started, boxes[d].copy())
                track.vote(detection)
                self.tracks.append(track)
                assigned[d] = track
        self.tracks = [track for track in self.tracks if track.misses <= self.max_age]
        return assigned  # type: ignore[return-value]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` [N, 4] with every box of `b` [M, 4] (x1, y1, x2, y2)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _closeness(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 / (1 + centre distance in mean box sides); 0 for sizes more than 2x apart."""
    centre_a = (a[:, :2] + a[:, 2:]) / 2
    centre_b = (b[:, :2] + b[:, 2:]) / 2
    side_a = np.sqrt(np.prod(np.clip(a[:, 2:] - a[:, :2], 1e-9, None), axis=1))
    side_b = np.sqrt(np.prod(np.clip(b[:, 2:] - b[:, :2], 1e-9, None), axis=1))
    distance = np.linalg.norm(centre_a[:, None] - centre_b[None], axis=2)
    scale = (side_a[:, None] + side_b[None, :]) / 2
    ratio = side_a[:, None] / side_b[None, :]
    closeness = 1 / (1 + distance / scale)
    return np.where((ratio <= 2) & (ratio >= 0.5), closeness, 0.0)


def _assign(similarity: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    """Row-column pairs of the one-to-one assignment of largest total similarity, each
    pair at least `minimum`."""
    if not similarity.size:
        return []
    rows, columns = linear_sum_assignment(similarity, maximize=True)
    return [
        (int(r), int(c)) for r, c in zip(rows, columns, strict=True) if similarity[r, c] >= minimum
    ]
