"""The mp4 writer of `detect --out` and `data drives` (data/video_writer.py)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from data.video_writer import MIN_RATE, VideoWriter


@pytest.mark.parametrize(
    ("rate", "stored"),
    [(29.97, Fraction(2997, 100)), (0.3, Fraction(3, 10)), (0.0001, MIN_RATE)],
)
def test_the_rate_is_the_one_asked_for_down_to_one_frame_in_1000_s(tmp_path, rate, stored):
    """A rate under 1/1000 rounded to 0, and FFmpeg wrote its default, 24 frames a second."""
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, rate, 65, 48) as writer:  # an odd width loses its last column
        for value in (0, 128, 255):
            writer.write(np.full((48, 65, 3), value, np.uint8))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == stored
        assert (stream.width, stream.height) == (64, 48)
        assert len(list(container.decode(stream))) == 3
