"""POST /v1/video: an uploaded video, answered as NDJSON, one line per processed frame and a
summary line at the end (or an error line, when the video turns out corrupt mid-way)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.decode import PreparedImage
from service.deps import EngineDep, MetricsDep, SettingsDep
from service.engine import Engine, EngineResult
from service.errors import ERROR_RESPONSES, ServiceError, error_body
from service.metrics import ServiceMetrics
from service.routes.predict import MaskFormatQuery, TopK
from service.schemas import MaskFormat, prediction_response
from service.video_frames import VideoFrame, VideoReader

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["video"])

NDJSON = "application/x-ndjson"
_LINES_DOC = (
    "NDJSON: one line per processed frame, `{frame_index, pts_s, ...prediction}` (the "
    'fields of /v1/predict), then `{"summary": {...}}`; a video found corrupt or cut short '
    'while decoding ends with `{"error": {code, message}}` instead of the summary.'
)


@router.post(
    "/video",
    response_class=StreamingResponse,
    responses={200: {"content": {NDJSON: {}}, "description": _LINES_DOC}, **ERROR_RESPONSES},
)
async def video(
    file: Annotated[UploadFile, File(description="mp4, mov, mkv, webm or avi (by content)")],
    engine: EngineDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    fps: Annotated[
        float | None,
        Query(gt=0, le=240, description="frames per second to sample; default every frame"),
    ] = None,
    top_k: TopK = 5,
    mask_format: MaskFormatQuery = MaskFormat.png,
) -> StreamingResponse:
    """Predict the frames of a video. The container is checked before the stream starts
    (an image or other non-video gets 415); at most `max_video_frames` frames are processed."""
    reader = await run_in_threadpool(VideoReader, file.file, settings.max_pixels)
    lines = _video_lines(
        reader, engine, metrics, fps, settings.max_video_frames, top_k, mask_format
    )
    return StreamingResponse(lines, media_type=NDJSON)


async def _video_lines(
    reader: VideoReader,
    engine: Engine,
    metrics: ServiceMetrics,
    fps: float | None,
    max_frames: int,
    top_k: int,
    mask_format: MaskFormat,
) -> AsyncIterator[bytes]:
    """Decode frames in the threadpool and keep up to one batch of them in the engine at a
    time, so consecutive frames share batches; lines still leave in frame order."""
    started = time.perf_counter()
    frames = reader.frames(fps, max_frames)
    window = engine.max_batch_size
    pending: deque[tuple[VideoFrame, PreparedImage, float, asyncio.Task[EngineResult]]] = deque()
    processed = 0
    decode_error: ServiceError | None = None
    try:
        try:
            while True:
                try:
                    item = await run_in_threadpool(_prepare_next, frames, engine)
                except ServiceError as error:
                    decode_error = error  # the frames decoded before it still get their lines
                    break
                if item is None:
                    break
                frame, prepared, frame_started = item
                submitted = engine.submit(prepared.tensor, prepared.size, top_k, wait_for_room=True)
                pending.append((frame, prepared, frame_started, asyncio.create_task(submitted)))
                while pending and (len(pending) >= window or pending[0][3].done()):
                    yield await _frame_line(*pending.popleft(), mask_format)
                    processed += 1
            while pending:
                yield await _frame_line(*pending.popleft(), mask_format)
                processed += 1
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
        if decode_error is not None:
            yield _line(decode_error.body())
            return
        seconds = time.perf_counter() - started
        summary = {
            "frames": processed,
            "decoded": reader.decoded,
            "seconds": round(seconds, 3),
            "fps": round(processed / seconds, 2) if seconds > 0 else None,
            "sample_fps": fps,
            "frame_cap_reached": processed >= max_frames,
            "video": reader.info.to_dict(),
        }
        yield _line({"summary": summary})
    finally:
        for *_, task in pending:
            task.cancel()
        reader.close()


def _prepare_next(
    frames: Iterator[VideoFrame], engine: Engine
) -> tuple[VideoFrame, PreparedImage, float] | None:
    """The next sampled frame, decoded and preprocessed (in a worker thread)."""
    frame_started = time.perf_counter()
    frame = next(frames, None)
    if frame is None:
        return None
    tensor = engine.predictor.preprocess(frame.rgb)
    decode_ms = (time.perf_counter() - frame_started) * 1000
    prepared = PreparedImage(tensor, frame.rgb.shape[:2], decode_ms)
    return frame, prepared, frame_started


async def _frame_line(
    frame: VideoFrame,
    prepared: PreparedImage,
    frame_started: float,
    task: asyncio.Task[EngineResult],
    mask_format: MaskFormat,
) -> bytes:
    result = await task
    prediction = await run_in_threadpool(
        prediction_response, result, prepared, mask_format, frame_started
    )
    return _line(
        {
            "frame_index": frame.index,
            "pts_s": round(frame.pts_s, 6),
            **prediction.model_dump(mode="json"),
        }
    )


def _line(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"
