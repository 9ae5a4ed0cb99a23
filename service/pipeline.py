"""The one path every image takes through the service, written once: /v1/predict, each file
of /v1/predict/batch, /v1/detect, each frame of /v1/stream, each frame of /v1/video (whose
frames come decoded from the video: routes/video.py paces them) and bench/service_load.py.

    header checks ─▶ pixel budget ─▶ decode + prepare ─▶ infer ─▶ encode
      (threadpool)    (reserve W×H)     (threadpool)     (engine)  (threadpool)

A mode says what prepare, infer and encode are:

- `ClassifyMode`: the picture is one sign. Decoded shrunk, preprocessed to the crop model's
  S x S input, one "classify" job; answered with class, top-k, box and mask (schemas.Prediction).
- `SceneMode`: every sign of a whole frame (model/detect.py). Decoded whole (crops are cut from
  the original pixels); the scene model's input is one "segment" job; instances and their
  crops are found in the threadpool; each crop is one "classify" job, batched with everyone
  else's; answered with a list of signs (schemas.Detections). With a tracker (one per video
  or stream connection) each sign gets its track id and its track's class.

The image's pixels stay reserved until its answer is built: masks come back at full size,
so the answer costs memory in proportion to the original, not to the network input. After a
large image the process gives its freed memory back to the system.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import numpy as np
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from model.detect import (
    DetectConfig,
    Detection,
    FrameInput,
    Instance,
    crop_inputs,
    find_instances,
    prepare_frame,
    read_signs,
    stitch,
)
from model.inference import Predictor
from model.reading import combine, cut, reading_window, scaled, worth_reading
from model.track import Tracker
from service import memory
from service.decode import ImageLimits, PreparedImage, decode_image, image_pixels
from service.engine import Engine, EngineResult
from service.errors import NoSceneModel
from service.limits import PixelBudget
from service.schemas import (
    Detections,
    MaskFormat,
    Prediction,
    SceneTimings,
    Sign,
    TrackedDetections,
    TrackedSign,
    encode_box_mask,
    prediction_response,
)

# Images decode no smaller than this many times the network's input side: enough for the
# area resize that follows to see every detail it can keep.
SHRINK_MARGIN = 4
# From this many pixels on, an image's answer is followed by giving memory back.
LARGE_IMAGE_PIXELS = 4_000_000
CLASSIFY, SCENE = "classify", "scene"


@dataclass(frozen=True)
class Options:
    top_k: int = 5
    mask_format: MaskFormat = MaskFormat.png


class Mode(Protocol):
    name: str

    @property
    def shrink_to(self) -> int | None:
        """How far decoding may shrink a large image (None: not at all)."""

    def prepare(self, rgb: np.ndarray, size: tuple[int, int], decode_ms: float): ...

    async def infer(self, prepared, options: Options, *, wait_for_room: bool = False): ...

    def encode(
        self, result, prepared, options: Options, started: float, tracker: Tracker | None
    ) -> BaseModel: ...


class ClassifyMode:
    name = CLASSIFY

    def __init__(self, engine: Engine, predictor: Predictor):
        self.engine = engine
        self.predictor = predictor

    @property
    def shrink_to(self) -> int:
        return SHRINK_MARGIN * self.predictor.image_size

    def prepare(self, rgb: np.ndarray, size: tuple[int, int], decode_ms: float) -> PreparedImage:
        started = time.perf_counter()
        tensor = self.predictor.preprocess(rgb)
        spent = decode_ms + (time.perf_counter() - started) * 1000
        return PreparedImage(tensor, size, spent, rgb)

    async def infer(
        self, prepared: PreparedImage, options: Options, *, wait_for_room: bool = False
    ) -> EngineResult:
        """Find, then read (model/reading.py): the whole picture finds the sign, and the sign
        cut out of it with a margin is read in a second job."""
        found = await self.engine.submit(
            prepared.tensor, prepared.size, options.top_k, wait_for_room=wait_for_room
        )
        rgb, prepared.rgb = prepared.rgb, None
        window = None
        if rgb is not None and worth_reading(found.prediction):
            box = scaled(found.prediction.box, prepared.size, rgb.shape[:2])
            window = reading_window(box, *rgb.shape[:2])
        if window is None:
            return found
        crop = await run_in_threadpool(self.predictor.preprocess, cut(rgb, window))
        # The second job belongs to a request admitted already: it waits for room.
        x1, y1, x2, y2 = window
        read = await self.engine.submit(crop, (y2 - y1, x2 - x1), options.top_k, wait_for_room=True)
        return EngineResult(
            output=combine(found.prediction, read.prediction),
            queue_ms=found.queue_ms + read.queue_ms,
            inference_ms=found.inference_ms + read.inference_ms,
            batch_size=found.batch_size,
        )

    def encode(
        self,
        result: EngineResult,
        prepared: PreparedImage,
        options: Options,
        started: float,
        tracker: Tracker | None = None,
    ) -> Prediction:
        return prediction_response(result, prepared, options.mask_format, started)


@dataclass
class PreparedFrame:
    frame: FrameInput
    size: tuple[int, int]  # (H, W) of the original
    decode_ms: float
    rgb: np.ndarray | None  # the original pixels, until the crops are cut


@dataclass
class SceneResult:
    detections: list[Detection]
    queue_ms: float
    segment_ms: float
    instances_ms: float
    classify_ms: float


class SceneMode:
    name = SCENE
    shrink_to = None  # crops are cut from the original pixels

    def __init__(self, engine: Engine, predictor: Predictor, config: DetectConfig):
        self.engine = engine
        self.predictor = predictor
        self.config = config

    def prepare(self, rgb: np.ndarray, size: tuple[int, int], decode_ms: float) -> PreparedFrame:
        started = time.perf_counter()
        frame = prepare_frame(rgb, self.config)
        return PreparedFrame(frame, size, decode_ms + (time.perf_counter() - started) * 1000, rgb)

    async def infer(
        self, prepared: PreparedFrame, options: Options, *, wait_for_room: bool = False
    ) -> SceneResult:
        segmented = await self.engine.segment(prepared.frame.tensor, wait_for_room=wait_for_room)
        started = time.perf_counter()
        instances, crops = await run_in_threadpool(self._cut, segmented.output, prepared)
        instances_ms = (time.perf_counter() - started) * 1000
        # The crops belong to a request admitted already: they wait for room in the queue
        # rather than fail it.
        tasks = [
            asyncio.ensure_future(self.engine.submit(tensor, size, 1, wait_for_room=True))
            for tensor, size in crops
        ]
        try:
            read = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return SceneResult(
            detections=read_signs(instances, [result.prediction for result in read]),
            queue_ms=segmented.queue_ms + max((r.queue_ms for r in read), default=0.0),
            segment_ms=segmented.inference_ms,
            instances_ms=instances_ms,
            classify_ms=max((r.inference_ms for r in read), default=0.0),
        )

    def _cut(
        self, probabilities: np.ndarray, prepared: PreparedFrame
    ) -> tuple[list[Instance], list]:
        """In the threadpool: the instances of the mask and their crops from the original."""
        frame = prepared.frame
        assert prepared.rgb is not None
        maps = stitch(probabilities, frame)
        instances = find_instances(maps, frame.geometry, self.config, prepared.rgb)
        crops = crop_inputs(prepared.rgb, instances, self.predictor.preprocess, self.config.margin)
        prepared.rgb = None  # the crops are cut: the frame's pixels can go
        return instances, crops

    def encode(
        self,
        result: SceneResult,
        prepared: PreparedFrame,
        options: Options,
        started: float,
        tracker: Tracker | None = None,
    ) -> Detections:
        detections = result.detections
        tracks = tracker.update(detections) if tracker is not None else None
        signs = []
        for index, detection in enumerate(detections):
            fields = {
                "box": detection.box,
                "mask": encode_box_mask(
                    detection.mask, detection.box, prepared.size, options.mask_format
                ),
                "kind": detection.kind,
                "class_id": detection.class_id,
                "class_name": detection.class_name,
                "confidence": detection.confidence,
                "score": detection.score,
            }
            if tracks is None:
                signs.append(Sign(**fields))
                continue
            track = tracks[index]
            kind, class_id, class_name, confidence = track.label
            fields.update(kind=kind, class_id=class_id, class_name=class_name)
            fields.update(confidence=confidence, track_id=track.track_id)
            signs.append(TrackedSign(**fields))
        timings = SceneTimings(
            decode=prepared.decode_ms,
            queue=result.queue_ms,
            inference=result.segment_ms + result.classify_ms,
            segment=result.segment_ms,
            instances=result.instances_ms,
            classify=result.classify_ms,
            total=(time.perf_counter() - started) * 1000,
        )
        answer = TrackedDetections if tracks is not None else Detections
        return answer(signs=signs, image_size=prepared.size, timings_ms=timings)


class Pipeline:
    """The modes over one engine, with the service's image limits and pixel budget."""

    def __init__(
        self,
        engine: Engine,
        predictor: Predictor,
        budget: PixelBudget,
        limits: ImageLimits,
        scene_config: DetectConfig | None = None,
    ):
        self.engine = engine
        self.budget = budget
        self.limits = limits
        self.classify = ClassifyMode(engine, predictor)
        self.scene = (
            SceneMode(engine, predictor, scene_config or DetectConfig())
            if engine.scene is not None
            else None
        )

    @property
    def predictor(self) -> Predictor:
        return self.classify.predictor

    def mode(self, name: str) -> Mode:
        """The mode called `name`; NoSceneModel (503) for "scene" without a scene model."""
        if name == SCENE:
            if self.scene is None:
                raise NoSceneModel()
            return self.scene
        if name != CLASSIFY:
            raise ValueError(f"unknown mode {name!r}")
        return self.classify

    async def answer(
        self,
        source: bytes | BinaryIO,
        mode: Mode,
        options: Options,
        *,
        started: float | None = None,
        tracker: Tracker | None = None,
    ) -> BaseModel:
        """The answer for one untrusted image in `mode`; ServiceError for a bad one."""
        started = time.perf_counter() if started is None else started
        with self.engine.admit_frame() if mode is self.scene else nullcontext():
            pixels = await run_in_threadpool(image_pixels, source, self.limits)
            async with self.budget.reserve(pixels):
                prepared = await run_in_threadpool(self._decode, source, mode)
                result = await mode.infer(prepared, options)
                answer = await run_in_threadpool(
                    mode.encode, result, prepared, options, started, tracker
                )
        if pixels >= LARGE_IMAGE_PIXELS or mode is self.scene:
            # A whole frame's activations are hundreds of MB, whatever the upload's size.
            memory.give_back_soon()
        return answer

    def _decode(self, source: bytes | BinaryIO, mode: Mode):
        started = time.perf_counter()
        decoded = decode_image(source, self.limits, mode.shrink_to)
        return mode.prepare(decoded.rgb, decoded.size, (time.perf_counter() - started) * 1000)
