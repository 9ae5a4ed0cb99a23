"""Uploaded videos as a stream of sampled RGB frames, decoded with PyAV straight from the
(spooled) upload file, so a video is never held in memory whole.

The container is judged by its magic bytes and FFmpeg is then told which demuxer to use
instead of probing: an image, a playlist or any other format FFmpeg could open is refused
up front (a playlist would even make FFmpeg open the URLs named in it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO

import av
import numpy as np

from service.errors import ImageTooLarge, InvalidVideo, UnsupportedMedia

# ISO base media (mp4, mov, m4v) files open with one of these boxes, after its 4-byte size.
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska and WebM


def sniff_container(head: bytes) -> str | None:
    """FFmpeg's demuxer for a file starting with `head`: "mov" (mp4, mov), "matroska"
    (mkv, webm), "avi", or None for anything else."""
    if head[4:8] in _ISO_BOXES:
        return "mov"
    if head.startswith(_EBML):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    fps: float | None  # the stream's average frame rate, when it declares one
    duration_s: float | None
    frames: int | None  # as the header declares it (mp4, avi); Matroska does not

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoFrame:
    index: int  # position among all decoded frames, sampled or not
    pts_s: float
    rgb: np.ndarray


class VideoReader:
    """An opened video: `info`, then `frames(...)` once; `close()` when done."""

    def __init__(self, file: BinaryIO, max_pixels: int):
        self.decoded = 0  # frames decoded so far, sampled or not
        file.seek(0)
        demuxer = sniff_container(file.read(16))
        file.seek(0)
        if demuxer is None:
            raise UnsupportedMedia(
                "not a video in a supported container (mp4, mov, mkv, webm, avi)"
            )
        try:
            # mode="r" spelled out: PyAV otherwise takes the mode from the file object, and a
            # spooled upload's is "w+b".
            self._container = av.open(file, mode="r", format=demuxer)
        except (av.FFmpegError, ValueError) as error:
            raise InvalidVideo(f"the video cannot be read ({error})") from None
        try:
            if not self._container.streams.video:
                raise InvalidVideo("the file has no video stream (is it cut short?)")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            context = self._stream.codec_context
            if context.width * context.height > max_pixels:
                raise ImageTooLarge(
                    f"video frames are {context.width}x{context.height}; "
                    f"the limit is {max_pixels} pixels"
                )
            rate = self._stream.average_rate
            duration = self._container.duration
            self.info = VideoInfo(
                container=self._container.format.name,
                codec=context.name,
                width=context.width,
                height=context.height,
                fps=float(rate) if rate else None,
                duration_s=duration / av.time_base if duration else None,
                frames=self._stream.frames or None,
            )
        except BaseException:
            self._container.close()
            raise

    def frames(self, sample_fps: float | None, max_frames: int) -> Iterator[VideoFrame]:
        """Decoded frames, every one or one per 1/sample_fps seconds of presentation time,
        at most `max_frames`. A decoding failure raises InvalidVideo naming the frame."""
        step = 1 / sample_fps if sample_fps else 0.0
        next_time = None
        yielded = 0
        index = -1
        decoded = self._container.decode(self._stream)
        while yielded < max_frames:
            try:
                frame = next(decoded)
            except StopIteration:
                self._check_complete()
                return
            except (av.FFmpegError, ValueError) as error:
                where = f"after frame {index}" if index >= 0 else "before its first frame"
                raise InvalidVideo(f"the video is truncated or corrupt {where} ({error})") from None
            index += 1
            self.decoded = index + 1
            pts_s = self._frame_time(frame, index)
            if next_time is not None and pts_s + 1e-6 < next_time:
                continue
            # The next sample time advances in whole steps, so sampling keeps the asked rate
            # on average even when the video's own rate is not a multiple of it.
            next_time = pts_s + step if next_time is None else next_time + step
            while step and next_time <= pts_s:
                next_time += step
            yielded += 1
            yield VideoFrame(index, pts_s, frame.to_ndarray(format="rgb24"))

    def _check_complete(self) -> None:
        """A file cut short often decodes without any error, just fewer frames: compare with
        what its header declares (the frame count, else duration x rate, one frame of slack
        for rounding)."""
        expected = self.info.frames
        if expected is None and self.info.duration_s and self.info.fps:
            expected = round(self.info.duration_s * self.info.fps)
        if expected is not None and self.decoded < expected - 1:
            raise InvalidVideo(
                f"the video is cut short: {self.decoded} frames of the {expected} "
                "its header declares"
            )

    def close(self) -> None:
        self._container.close()

    def _frame_time(self, frame: av.VideoFrame, index: int) -> float:
        if frame.time is not None:
            return float(frame.time)
        return index / self.info.fps if self.info.fps else float(index)
