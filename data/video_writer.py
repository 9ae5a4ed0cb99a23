"""Writing frames to an mp4 (PyAV): the annotated copy of `greedysign detect --out` and the
videos of `greedysign data drives`."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

VIDEO_CODECS = ("libx264", "mpeg4")  # the first this FFmpeg build has writes the video
MIN_RATE = Fraction(1, 1000)  # frames a second: one frame every 1000 s


class VideoWriter:
    """H.264 (else MPEG-4) in an mp4, yuv420p (even width and height: odd ones lose a pixel).
    A context manager: leaving it flushes the encoder and closes the file."""

    def __init__(self, path: Path | str, rate: float, width: int, height: int):
        import av  # PyAV; imported here so that the module loads without it

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height = max(2, width - width % 2), max(2, height - height % 2)
        self.container = av.open(str(path), "w", format="mp4")
        codec = next(name for name in VIDEO_CODECS if name in av.codecs_available)
        # The rate as a fraction the container stores; under 1/1000 frame a second it would
        # round to 0, which FFmpeg takes as its default of 24.
        stored_rate = max(Fraction(rate).limit_denominator(1000), MIN_RATE)
        self.stream = self.container.add_stream(codec, rate=stored_rate)
        self.stream.width, self.stream.height = self.width, self.height
        self.stream.pix_fmt = "yuv420p"

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb[: self.height, : self.width].copy(), format="rgb24")
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
