"""The tracker (model/track.py): stable ids, motion, class votes, tracks that end."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from model.track import Tracker, iou_matrix


@dataclass
class Seen:
    box: tuple[int, int, int, int]
    class_id: int | None = 7
    class_name: str = "No entry"
    kind: str = "sign"
    confidence: float = 0.9


def at(x: float, y: float, side: float = 40, **answer) -> Seen:
    return Seen((round(x), round(y), round(x + side), round(y + side)), **answer)


def ids(tracks) -> list[int]:
    return [track.track_id for track in tracks]


def test_ids_are_stable_while_signs_drift_and_grow() -> None:
    tracker = Tracker()
    history = []
    for frame in range(20):
        # One sign drifts right and grows (the car nears it); one stays; their order in the
        # detection list flips every frame.
        signs = [at(100 + 6 * frame, 200, 30 + frame), at(600, 300)]
        history.append(ids(tracker.update(signs if frame % 2 else signs[::-1])))
    assert all(sorted(step) == [1, 2] for step in history)
    assert history[0] == [1, 2] and history[1] == [2, 1]  # ids follow the signs, not the order
    assert tracker.started == 2


def test_a_fast_sign_keeps_its_track_by_its_velocity() -> None:
    """A 20 px sign moving 30 px a frame (sampled video): no overlap between consecutive
    boxes, yet one track, because the track predicts where the box goes."""
    tracker = Tracker()
    steps = [ids(tracker.update([at(100 + 30 * f, 100, 20)])) for f in range(10)]
    assert steps == [[1]] * 10
    track = tracker.tracks[0]
    assert track.velocity[0] == pytest.approx(30) and track.hits == 10


def test_two_close_signs_are_not_swapped() -> None:
    tracker = Tracker()
    first = ids(tracker.update([at(100, 100, 30), at(140, 100, 30)]))  # side by side
    later = ids(tracker.update([at(102, 101, 30), at(142, 101, 30)]))
    assert first == later == [1, 2]


def test_the_class_of_a_track_is_its_frames_vote() -> None:
    tracker = Tracker()
    answers = [(7, "No entry", 0.9)] * 4 + [(12, "Stop", 0.95)] + [(7, "No entry", 0.6)]
    for index, (class_id, name, confidence) in enumerate(answers):
        (track,) = tracker.update(
            [at(100 + index, 100, class_id=class_id, class_name=name, confidence=confidence)]
        )
        kind, voted, voted_name, mean = track.label
        assert (kind, voted, voted_name) == ("sign", 7, "No entry")  # one misread frame loses
    assert mean == pytest.approx((0.9 * 4 + 0.6) / 5)
    # An unknown sign votes too: enough of them outweigh the class.
    for index in range(8):
        (track,) = tracker.update(
            [at(110 + index, 100, class_id=None, class_name="unknown sign", kind="unknown_sign")]
        )
    assert track.label[:3] == ("unknown_sign", None, "unknown sign")


def test_tracks_end_when_the_sign_has_left() -> None:
    tracker = Tracker(max_age=3)
    assert ids(tracker.update([at(100, 100)])) == [1]
    for _ in range(3):  # unseen for 3 frames: kept (a sign hidden by a passing truck)
        assert tracker.update([]) == []
    assert len(tracker.tracks) == 1
    assert ids(tracker.update([at(100, 100)])) == [1]
    for _ in range(4):  # unseen for 4: gone
        tracker.update([])
    assert tracker.tracks == []
    assert ids(tracker.update([at(100, 100)])) == [2]  # the same place later: a new sign


def test_a_new_sign_gets_a_new_id_and_far_signs_are_not_matched() -> None:
    tracker = Tracker()
    tracker.update([at(100, 100)])
    assert ids(tracker.update([at(100, 100), at(900, 500)])) == [1, 2]
    # A sign twice as large far away is not the first one jumping there.
    assert ids(tracker.update([at(500, 400, 80)])) == [3]


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 20, 20]], float)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [30, 30, 40, 40]], float)
    np.testing.assert_allclose(
        iou_matrix(a, b), [[25 / 175, 1, 0], [100 / 400, 100 / 400, 0]], atol=1e-9
    )
    assert iou_matrix(a[:0], b).shape == (0, 3)
