"""POST /v1/video: an uploaded video, answered as NDJSON, one line per processed frame and a
summary line at the end (or an error line, when the video turns out corrupt, over a limit or
past its deadline mid-way).

`mode=classify` (default) answers each frame as /v1/predict does; `mode=scene` as /v1/detect,
with a tracker for the request: each sign carries its `track_id` and its track's class.

The first frame is decoded before the answer starts, so a video whose frames cannot be
read or are over max_pixels gets a 4xx like any bad upload. Frames then take the steps of
service/pipeline.py (prepare, infer, encode): each reserves its pixels in the pixel budget
before it is decoded and keeps them until its line is written (its mask comes back at full
size), so a video of large frames keeps fewer of them in flight; decoding stops at
`max_video_decoded_frames` and at `video_deadline_s`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from model.track import Tracker
from service import memory
from service.deps import MetricsDep, PipelineDep, SettingsDep
from service.errors import ERROR_RESPONSES, InferenceTimeout, ServiceError, error_body
from service.limits import PixelBudget
from service.metrics import ServiceMetrics
from service.pipeline import CLASSIFY, LARGE_IMAGE_PIXELS, SCENE, Mode, Options
from service.routes.predict import MaskFormatQuery, TopK
from service.schemas import MaskFormat
from service.settings import Settings
from service.video_frames import VideoFrame, VideoReader

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["video"])

NDJSON = "application/x-ndjson"
_LINES_DOC = (
    "NDJSON: one line per processed frame, `{frame_index, pts_s, ...answer}` (the fields "
    "of /v1/predict, or with mode=scene those of /v1/detect, each sign with its track_id), "
    'then `{"summary": {...}}`; a video found corrupt or cut short while decoding, a frame '
    "over the pixel limit, or the video deadline passing, ends with "
    '`{"error": {code, message}}` instead of the summary.'
)
ModeQuery = Annotated[
    Literal["classify", "scene"],
    Query(
        description="classify: each frame is one sign (as /v1/predict); scene: every sign in "
        "the frame, tracked (as /v1/detect, plus track_id)"
    ),
]


@router.post(
    "/video",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": _LINES_DOC}, **ERROR_RESPONSES},
)
async def video(
    file: Annotated[UploadFile, File(description="mp4, mov, mkv, webm or avi (by content)")],
    pipeline: PipelineDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    fps: Annotated[
        float | None,
        Query(gt=0, le=240, description="frames per second to sample; default every frame"),
    ] = None,
    top_k: TopK = 5,
    mask_format: MaskFormatQuery = MaskFormat.png,
    mode: ModeQuery = CLASSIFY,
) -> StreamingResponse:
    """Predict the frames of a video. The container and its first frame are checked before
    the stream starts (an image or other non-video gets 415, frames over the pixel limit
    422; mode=scene without a scene model 503); at most `max_video_frames` frames are
    processed."""
    started = time.perf_counter()
    chosen = pipeline.mode(mode)
    deadline = time.monotonic() + settings.video_deadline_s
    with ExitStack() as held:
        held.enter_context(pipeline.engine.admit_video())
        reader = await run_in_threadpool(
            VideoReader, file.file, settings.max_pixels, settings.min_image_side
        )
        # From here the feed holds the video's place, given back when it closes.
        feed = _FrameFeed(
            reader, chosen, pipeline.budget, settings, fps, deadline, held.pop_all().close
        )
    try:
        first = await feed.next()
    except BaseException:
        feed.close()
        raise
    engine, scene = pipeline.engine, chosen.name == SCENE
    tracker = Tracker() if scene else None
    # Frames in flight: one batch, and in scene mode one more being cut while a batch runs.
    window = engine.scene_max_batch_size + 1 if scene else engine.max_batch_size
    lines = _video_lines(
        feed, first, metrics, Options(top_k, mask_format), window, tracker, started
    )
    return _VideoResponse(lines, feed)


class _VideoResponse(StreamingResponse):
    """The NDJSON stream; whatever becomes of it (a client gone before its first line), the
    video is closed and its pixels go back to the budget."""

    def __init__(self, lines: AsyncIterator[bytes], feed: _FrameFeed):
        super().__init__(lines, media_type=NDJSON)
        self.feed = feed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.feed.close()


@dataclass
class _Decoded:
    frame: VideoFrame
    prepared: Any  # what the mode's prepare made of the frame
    started: float
    pixels: int  # held in the pixel budget until the frame's line is written


# Writes the oldest frame in flight, giving its pixels back; False when none is in flight.
MakeRoom = Callable[[], Awaitable[bool]]


class _FrameFeed:
    """The sampled frames of one video, decoded one at a time in the threadpool, each under
    a reservation in the pixel budget made before it is decoded. The reservation is sized by
    the largest frame seen so far (at first, what the header declares); a frame larger than
    that adds the difference once decoded. `close()` closes the video, gives back every
    pixel the feed still holds and calls `on_close` (which gives back the video's place)."""

    def __init__(
        self,
        reader: VideoReader,
        mode: Mode,
        budget: PixelBudget,
        settings: Settings,
        fps: float | None,
        deadline: float,
        on_close: Callable[[], object],
    ):
        self.reader = reader
        self.on_close = on_close
        self.mode = mode
        self.budget = budget
        self.fps = fps
        self.max_frames = settings.max_video_frames
        self.deadline = deadline
        self.video_deadline_s = settings.video_deadline_s
        self.frames = reader.frames(
            fps,
            settings.max_video_frames,
            max_decoded=settings.max_video_decoded_frames,
            deadline=deadline,
            shrink_to=mode.shrink_to,
        )
        declared = reader.info.width * reader.info.height
        self.expected = max(1, min(declared, settings.max_pixels, budget.largest))
        self.held = 0
        self.largest = 0
        self._closed = False

    async def next(self, make_room: MakeRoom | None = None) -> _Decoded | None:
        """The next sampled frame, decoded and preprocessed, its pixels held; None at the
        end. `make_room` is called while the budget is short."""
        await self._reserve(self.expected, make_room)
        item = await run_in_threadpool(self._prepare_next)
        if item is None:
            self.release(self.expected)
            return None
        if item.pixels > self.expected:
            await self._reserve(item.pixels - self.expected, make_room)
            self.expected = item.pixels
        else:
            self.release(self.expected - item.pixels)
        self.largest = max(self.largest, item.pixels)
        return item

    def release(self, pixels: int) -> None:
        pixels = min(pixels, self.held)
        if pixels > 0:
            self.held -= pixels
            self.budget.release(pixels)

    def timed_out(self) -> InferenceTimeout | None:
        if time.monotonic() <= self.deadline:
            return None
        return InferenceTimeout(
            f"the video ran past its deadline of {self.video_deadline_s:g} s "
            f"({self.reader.decoded} frames decoded)"
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.release(self.held)
        self.reader.close()
        self.on_close()
        if self.largest >= LARGE_IMAGE_PIXELS or self.mode.name == SCENE:
            memory.give_back_soon()

    async def _reserve(self, pixels: int, make_room: MakeRoom | None) -> None:
        if pixels <= 0:
            return
        while not self.budget.try_acquire(pixels):
            if make_room is None or not await make_room():
                await self.budget.acquire(pixels)
                break
        self.held += pixels

    def _prepare_next(self) -> _Decoded | None:
        """In a worker thread: the next sampled frame, decoded and prepared."""
        frame_started = time.perf_counter()
        frame = next(self.frames, None)
        if frame is None:
            return None
        decode_ms = (time.perf_counter() - frame_started) * 1000
        prepared = self.mode.prepare(frame.rgb, frame.size, decode_ms)
        frame.rgb = frame.rgb[:0]  # what the mode prepared is all that is needed from here on
        return _Decoded(frame, prepared, frame_started, min(frame.pixels, self.budget.largest))


async def _video_lines(
    feed: _FrameFeed,
    first: _Decoded | None,
    metrics: ServiceMetrics,
    options: Options,
    window: int,
    tracker: Tracker | None,
    started: float,
) -> AsyncIterator[bytes]:
    """Keep up to `window` frames (one batch) in the engine at a time (fewer when the pixel
    budget runs short), so consecutive frames share batches; lines still leave in frame
    order, which is the order the tracker sees them in."""
    mode = feed.mode
    pending: deque[tuple[_Decoded, asyncio.Task]] = deque()
    ready: deque[bytes] = deque()  # lines written, waiting to leave
    processed = 0
    stop: ServiceError | None = None

    def submit(item: _Decoded) -> None:
        task = asyncio.create_task(mode.infer(item.prepared, options, wait_for_room=True))
        pending.append((item, task))

    async def write_oldest() -> bool:
        nonlocal processed
        if not pending:
            return False
        item, task = pending.popleft()
        try:
            ready.append(await _frame_line(item, task, mode, options, tracker))
        finally:
            feed.release(item.pixels)
        processed += 1
        return True

    try:
        try:
            if first is not None:
                submit(first)
            while first is not None and (stop := feed.timed_out()) is None:
                try:
                    item = await feed.next(write_oldest)
                except ServiceError as error:
                    stop, item = error, None  # the frames decoded before it still get lines
                while ready:  # written while the budget was short
                    yield ready.popleft()
                if item is None:
                    break
                submit(item)
                while pending and (len(pending) >= window or pending[0][1].done()):
                    await write_oldest()
                    yield ready.popleft()
            while pending:
                await write_oldest()
                yield ready.popleft()
        except ServiceError as error:
            yield _line(error.body())
            return
        except Exception:
            # The 200 status has left already: say what happened rather than cut the stream.
            log.exception("video stream failed")
            yield _line(error_body("internal_error", "the video could not be processed"))
            return
        finally:
            metrics.video_frames.inc(processed)
        if stop is not None:
            yield _line(stop.body())
            return
        seconds = time.perf_counter() - started
        reader = feed.reader
        summary = {
            "frames": processed,
            "decoded": reader.decoded,
            "seconds": round(seconds, 3),
            "fps": round(processed / seconds, 2) if seconds > 0 else None,
            "sample_fps": feed.fps,
            "mode": mode.name,
            **({"tracks": tracker.started} if tracker is not None else {}),
            "frame_cap_reached": processed >= feed.max_frames,
            "decode_cap_reached": reader.decode_cap_reached,
            "video": reader.info.to_dict(),
        }
        yield _line({"summary": summary})
    finally:
        for _, task in pending:
            task.cancel()
        feed.close()


async def _frame_line(
    item: _Decoded, task: asyncio.Task, mode: Mode, options: Options, tracker: Tracker | None
) -> bytes:
    result = await task
    answer = await run_in_threadpool(
        mode.encode, result, item.prepared, options, item.started, tracker
    )
    return _line(
        {
            "frame_index": item.frame.index,
            "pts_s": round(item.frame.pts_s, 6),
            **answer.model_dump(mode="json"),
        }
    )


def _line(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"
