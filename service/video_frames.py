"""Uploaded videos as a stream of sampled RGB frames, decoded with PyAV straight from the
(spooled) upload file, so a video is never held in memory whole.

The container is judged by its magic bytes and FFmpeg is then told which demuxer to use
instead of probing: an image, a playlist or any other format FFmpeg could open is refused
up front (a playlist would even make FFmpeg open the URLs named in it).

A container's header may lie about the size of its frames (an MJPEG stream declared 64x64
can carry 8000x8000 pictures), so every frame is held to `max_pixels`: FFmpeg's decoder is
given the limit and refuses a larger picture before allocating it, and each decoded frame is
checked again; a frame whose sides are under `min_side` is refused like such an image. The
pictures of an MJPEG stream are JPEGs, held to the images' limit on scans (see service.decode)
before they reach the decoder: one picture of a hundred thousand empty scans would keep a core
for a minute between two checks of the deadline. Decoding stops at a number of decoded frames
(sampled or not) and at a deadline, so a heavy video cannot keep the CPU for minutes.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import BinaryIO

import av
import numpy as np

from data.images import upright_video_frame, video_frame_quarter_turns
from service.decode import MAX_JPEG_SCANS, jpeg_scans
from service.errors import (
    ImageTooLarge,
    ImageTooSmall,
    InferenceTimeout,
    InvalidVideo,
    UnsupportedMedia,
)

# ISO base media (mp4, mov, m4v) files open with one of these boxes, after its 4-byte size.
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
# HEIF photos (AVIF, HEIC) are ISO base media files too, named by these brands in their
# `ftyp` box. FFmpeg opens some of them as a one-frame video, but a photo is no video.
_IMAGE_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1")
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska and WebM
# The head to read for sniff_container: enough for an `ftyp` box's compatible brands.
SNIFF_BYTES = 256


def sniff_container(head: bytes) -> str | None:
    """FFmpeg's demuxer for a file starting with `head` (SNIFF_BYTES of it): "mov" (mp4,
    mov), "matroska" (mkv, webm), "avi", or None for anything else, a HEIF photo included."""
    if head[4:8] == b"ftyp" and not _ftyp_brands(head).isdisjoint(_IMAGE_BRANDS):
        return None
    if head[4:8] in _ISO_BOXES:
        return "mov"
    if head.startswith(_EBML):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def _ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of the `ftyp` box `head` opens with: size(4) 'ftyp'(4)
    major_brand(4) minor_version(4) compatible_brands(4 each) to the box's end."""
    size = int.from_bytes(head[:4], "big")
    end = min(size, len(head)) if size >= 16 else len(head)  # 0: the box runs to the file's end
    return {head[8:12], *(head[start : start + 4] for start in range(16, end - 3, 4))}


@dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int  # as shown: a stored frame's sides swapped once one turned upright has decoded
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
    rgb: np.ndarray  # HxWx3 uint8, shrunk when frames() was asked to
    size: tuple[int, int]  # (H, W) of the frame upright, before any shrinking

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]


class VideoReader:
    """An opened video: `info`, then `frames(...)` once; `close()` when done."""

    def __init__(self, file: BinaryIO, max_pixels: int, min_side: int = 1):
        self.max_pixels = max_pixels
        self.min_side = min_side
        self.decoded = 0  # frames decoded so far, sampled or not
        self.decode_cap_reached = False
        file.seek(0)
        demuxer = sniff_container(file.read(SNIFF_BYTES))
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
            # FFmpeg checks the width padded to its stride alignment: leave it some room; the
            # exact limit is checked on each decoded frame.
            context.options = {**context.options, "max_pixels": str(max_pixels * 9 // 8 + 4096)}
            if context.width * context.height > max_pixels:
                raise ImageTooLarge(
                    f"video frames are {context.width}x{context.height}; "
                    f"the limit is {max_pixels} pixels"
                )
            if context.width and context.height:  # 0 when the header leaves it to the frames
                self._check_sides(context.width, context.height, "video frames are")
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

    def frames(
        self,
        sample_fps: float | None,
        max_frames: int,
        *,
        max_decoded: int | None = None,
        deadline: float | None = None,
        shrink_to: int | None = None,
    ) -> Iterator[VideoFrame]:
        """Decoded frames, every one or one per 1/sample_fps seconds of presentation time,
        at most `max_frames` of them and at most `max_decoded` frames decoded in all (then
        `decode_cap_reached`). Past `deadline` (time.monotonic()) InferenceTimeout is raised;
        a frame over max_pixels raises ImageTooLarge, and a decoding failure InvalidVideo,
        naming the frame. With `shrink_to`, frames are scaled down as they are converted to
        RGB, both sides kept at least `shrink_to`."""
        step = 1 / sample_fps if sample_fps else 0.0
        next_time = None
        yielded = 0
        index = -1
        decoded = self._decoded()
        while yielded < max_frames:
            if max_decoded is not None and index + 1 >= max_decoded:
                self.decode_cap_reached = True
                return
            if deadline is not None and time.monotonic() > deadline:
                raise InferenceTimeout(
                    f"the video ran past its deadline after {index + 1} decoded frames"
                )
            try:
                frame = next(decoded)
            except StopIteration:
                self._check_complete()
                return
            except (av.FFmpegError, ValueError) as error:
                raise self._decoding_error(error) from None
            index += 1
            self.decoded = index + 1
            if frame.width * frame.height > self.max_pixels:
                raise ImageTooLarge(
                    f"frame {index} is {frame.width}x{frame.height} = "
                    f"{frame.width * frame.height} pixels; the limit is {self.max_pixels}"
                )
            self._check_sides(frame.width, frame.height, f"frame {index} is")
            pts_s = self._frame_time(frame, index)
            if next_time is not None and pts_s + 1e-6 < next_time:
                continue
            # The next sample time advances in whole steps, so sampling keeps the asked rate
            # on average even when the video's own rate is not a multiple of it.
            next_time = pts_s + step if next_time is None else next_time + step
            while step and next_time <= pts_s:
                next_time += step
            yielded += 1
            # Upright, as players show it; so is the size.
            size = (frame.height, frame.width)
            if video_frame_quarter_turns(frame) % 2:
                size = size[::-1]
                if (self.info.height, self.info.width) != size:  # the header's stored sides
                    self.info = replace(self.info, width=size[1], height=size[0])
            yield VideoFrame(index, pts_s, _rgb(frame, shrink_to), size)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """The stream's frames as they decode, an MJPEG picture's scans counted first."""
        mjpeg = self.info.codec == "mjpeg"
        for packet in self._container.demux(self._stream):
            if mjpeg and packet.size and jpeg_scans([bytes(packet)]) > MAX_JPEG_SCANS:
                raise InvalidVideo(
                    f"a picture {self._where()} holds more than "
                    f"{MAX_JPEG_SCANS} scans (encoders write a few dozen at most): refused, as "
                    "decoding each one walks the whole picture"
                )
            yield from packet.decode()

    def _check_sides(self, width: int, height: int, what: str) -> None:
        if min(width, height) < self.min_side:
            raise ImageTooSmall(
                f"{what} {width}x{height}; both sides must be at least {self.min_side} pixels"
            )

    def _where(self) -> str:
        return f"after frame {self.decoded - 1}" if self.decoded else "before its first frame"

    def _decoding_error(self, error: Exception) -> Exception:
        where = self._where()
        if getattr(error, "errno", None) == errno.EINVAL:
            # What FFmpeg's decoder answers to a picture over its max_pixels option.
            return ImageTooLarge(
                f"a frame {where} was refused by the decoder: over the limit of "
                f"{self.max_pixels} pixels, or a malformed size"
            )
        return InvalidVideo(f"the video is truncated or corrupt {where} ({error})")

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


def _rgb(frame: av.VideoFrame, shrink_to: int | None) -> np.ndarray:
    """The frame as HxWx3 uint8 RGB, upright; with `shrink_to`, scaled down by an integer
    factor (area averaging) in the same conversion, both sides kept at least `shrink_to`."""
    factor = min(frame.width, frame.height) // shrink_to if shrink_to else 1
    if factor < 2:
        return upright_video_frame(frame)
    return upright_video_frame(
        frame,
        width=max(1, frame.width // factor),
        height=max(1, frame.height // factor),
        interpolation="AREA",
    )
