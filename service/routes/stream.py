"""WS /v1/stream: live frames in, one answer per processed frame out; latest frame wins.

The client sends binary JPEG/PNG frames, each optionally preceded by a text message
`{"frame_id": ...}` naming it (else frames are numbered 0, 1, 2, ... as they arrive). One
task receives and keeps only the newest unprocessed frame; the other predicts whatever is
newest when it is free. So a client sending faster than the model runs gets answers for
the newest frames, each saying how many frames were dropped since the previous answer and
in all. A bad frame or message is answered with an error and the socket stays open. Frames
take the pipeline of /v1/predict (service/pipeline.py), pixel budget included.

With `mode=scene` each frame is answered as /v1/detect answers, and a tracker kept for the
connection gives each sign its `track_id` and its track's class (a dropped frame is one the
tracker does not see). Without a scene model the socket sends the `no_scene_model` error
and closes (1011).

Answers (JSON text messages):
    {"frame_id", ...the fields of /v1/predict or /v1/detect..., "dropped": {"since_last", "total"}}
    {"frame_id", "error": {"code", "message"}, "dropped": {...}}     a frame that failed
    {"frame_id", "error": {"code": "payload_too_large", ...}}         refused on arrival
    {"error": {"code": "invalid_message", "message"}}                 a malformed text message
Query parameters: mode (classify, scene), top_k, mask_format (as /v1/predict), api_key (when
the service has one and the client cannot send the X-API-Key header). A handshake the service
refuses gets the JSON error an HTTP route would give (service/errors.py, refuse_handshake):
422 `validation_error` for a bad query parameter, 401 for a missing or wrong key and 403 for
an origin the CORS rule does not allow (both checked by service/access.py), 503 with
Retry-After when not ready or `max_streams` streams are open already. On a server without
ASGI's denial responses these are close codes instead (1008; 1013 for the 503s), which the
server shows a client as a bare 403. After the handshake: close code 1011 for mode=scene
without a scene model. A plain HTTP request on the path gets 426 with `Upgrade: websocket`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from model.track import Tracker
from service.deps import API_KEY_HEADER, MetricsDep, SettingsDep, api_key_matches
from service.errors import (
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    UpgradeRequired,
    error_body,
    refuse_handshake,
)
from service.limits import Places
from service.metrics import ServiceMetrics
from service.pipeline import CLASSIFY, SCENE, Mode, Options, Pipeline
from service.routes.predict import MaskFormatQuery, TopK
from service.routes.video import ModeQuery
from service.schemas import MaskFormat

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["stream"])

# WebSocket close code (RFC 6455) for mode=scene without a scene model, after the handshake.
UNAVAILABLE = 1011
# A frame header is `{"frame_id": ...}`: longer text is refused before it is parsed.
MAX_TEXT_CHARS = 1024
INVALID_MESSAGE = (
    'text messages must be JSON like {"frame_id": 7} (an integer or a string), '
    f"at most {MAX_TEXT_CHARS} characters"
)


class LatestFrame:
    """A one-frame slot: a new frame replaces an unprocessed one, which counts as dropped."""

    def __init__(self) -> None:
        self._frame: tuple[Any, bytes] | None = None
        self._arrived = asyncio.Event()
        self._closed = False
        self._dropped_since_take = 0
        self.dropped_total = 0

    def put(self, frame_id: Any, data: bytes) -> None:
        if self._frame is not None:
            self._dropped_since_take += 1
            self.dropped_total += 1
        self._frame = (frame_id, data)
        self._arrived.set()

    def close(self) -> None:
        self._closed = True
        self._arrived.set()

    async def take(self) -> tuple[Any, bytes, int] | None:
        """The newest frame and how many were dropped since the last take; None once the
        slot is closed and empty."""
        while self._frame is None:
            if self._closed:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        (frame_id, data), self._frame = self._frame, None
        dropped, self._dropped_since_take = self._dropped_since_take, 0
        return frame_id, data, dropped


@router.websocket("/stream")
async def stream(
    websocket: WebSocket,
    settings: SettingsDep,
    metrics: MetricsDep,
    top_k: TopK = 5,
    mask_format: MaskFormatQuery = MaskFormat.png,
    mode: ModeQuery = CLASSIFY,
    api_key: Annotated[
        str | None, Query(description=f"for browsers, which cannot set {API_KEY_HEADER}")
    ] = None,
) -> None:
    if not api_key_matches(websocket.headers.get(API_KEY_HEADER) or api_key, settings):
        message = f"missing or wrong {API_KEY_HEADER} header (or api_key query parameter)"
        await refuse_handshake(
            websocket.scope, websocket.send, Unauthorized(message), POLICY_VIOLATION
        )
        return
    engine = websocket.app.state.engine
    pipeline: Pipeline | None = websocket.app.state.pipeline
    if engine is None or not engine.ready or pipeline is None:
        await refuse_handshake(websocket.scope, websocket.send, NotReady(), TRY_AGAIN_LATER)
        return
    streams: Places = websocket.app.state.streams
    if streams.full:
        # Each open stream may hold two frames of max_upload_bytes: their number is bounded.
        refusal = Overloaded(streams.message)
        await refuse_handshake(websocket.scope, websocket.send, refusal, TRY_AGAIN_LATER)
        return
    with streams.hold():
        await websocket.accept()
        try:
            chosen = pipeline.mode(mode)
        except ServiceError as error:  # scene mode without a scene model
            await websocket.send_text(json.dumps(error.body()))
            await websocket.close(UNAVAILABLE, error.code)
            return
        session = _StreamSession(websocket, pipeline, chosen, settings.max_upload_bytes, metrics)
        await session.run(Options(top_k, mask_format))


@router.get("/stream", include_in_schema=False)
async def stream_over_http() -> None:
    """Plain HTTP on the WebSocket's path: the resource is there, but only over WebSocket, so
    426 with `Upgrade: websocket` (a 404 would say it is not there; a 405 would name another
    method, but the handshake is this very GET). Other methods get 405, Allow: GET."""
    raise UpgradeRequired(
        "/v1/stream is a WebSocket: open it with a WebSocket client (ws:// or wss://)"
    )


class _StreamSession:
    def __init__(
        self,
        websocket: WebSocket,
        pipeline: Pipeline,
        mode: Mode,
        max_frame_bytes: int,
        metrics: ServiceMetrics,
    ):
        self.websocket = websocket
        self.pipeline = pipeline
        self.mode = mode
        # The connection's own tracker: its frames are one drive.
        self.tracker = Tracker() if mode.name == SCENE else None
        self.max_frame_bytes = max_frame_bytes
        self.metrics = metrics
        self.latest = LatestFrame()
        # Both tasks answer on the socket; one sender at a time keeps messages whole.
        self._send_lock = asyncio.Lock()

    async def run(self, options: Options) -> None:
        receiver = asyncio.create_task(self._receive())
        try:
            while (item := await self.latest.take()) is not None:
                frame_id, data, dropped = item
                self.metrics.stream_frames.labels("dropped").inc(dropped)
                message = await self._answer(frame_id, data, options)
                message["dropped"] = {"since_last": dropped, "total": self.latest.dropped_total}
                await self._send(message)
        except WebSocketDisconnect:
            pass
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    async def _answer(self, frame_id: Any, data: bytes, options: Options) -> dict:
        started = time.perf_counter()
        try:
            with self.pipeline.engine.admit():
                prediction = await self.pipeline.answer(
                    data, self.mode, options, started=started, tracker=self.tracker
                )
        except ServiceError as error:
            self.metrics.stream_frames.labels("error").inc()
            return {"frame_id": frame_id, **error.body()}
        self.metrics.stream_frames.labels("answered").inc()
        return {"frame_id": frame_id, **prediction.model_dump(mode="json")}

    async def _receive(self) -> None:
        """Fill the slot until the client goes away; then close it, which ends `run`."""
        sequence = 0
        named_id: Any = None
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    frame_id = sequence if named_id is None else named_id
                    sequence, named_id = sequence + 1, None
                    data = message["bytes"]
                    if len(data) > self.max_frame_bytes:
                        too_large = PayloadTooLarge(
                            f"frame of {len(data)} bytes; the limit is {self.max_frame_bytes}"
                        )
                        await self._send({"frame_id": frame_id, **too_large.body()})
                    else:
                        self.latest.put(frame_id, data)
                elif message.get("text") is not None:
                    named_id = await self._read_header(message["text"])
        except WebSocketDisconnect:
            return
        except Exception:
            # Nothing a client sends may end the session silently: log it, and let `run` end.
            log.exception("stream receiver failed")
        finally:
            self.latest.close()

    async def _read_header(self, text: str) -> Any:
        """The frame_id a text message names, or None after answering a malformed one."""
        try:
            if len(text) > MAX_TEXT_CHARS:
                raise ValueError("too long")
            header = json.loads(text)
            frame_id = header["frame_id"]
            if isinstance(frame_id, bool) or not isinstance(frame_id, int | str):
                raise TypeError
        # RecursionError: JSON nested a thousand deep exhausts the parser's stack.
        except (ValueError, KeyError, TypeError, RecursionError):
            await self._send(error_body("invalid_message", INVALID_MESSAGE))
            return None
        return frame_id

    async def _send(self, message: dict) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(message, separators=(",", ":")))
