"""The inference engine: one bounded queue, one batching task, one inference thread.

    submit() ─▶ asyncio.Queue(queue_size) ─▶ batching task ─▶ worker thread: predict_batch
       ▲                                        │
       └──────── future per request ◀───────────┘

Requests arrive already decoded and preprocessed (decoding happens in the threadpool before
queueing, so one bad file cannot fail a batch). There are two kinds of job: "classify" (a
[3, S, S] crop for the crop model: `submit`) and "segment" (a frame or its tiles,
[N, 3, h, w], for the scene model: `segment`). A batch holds jobs of one kind and one input
shape only; jobs of other keys met while a batch fills wait, in arrival order, for their
own. Each request holds an `admit()` place from the end of its upload to its answer
(service/limits.py's Admission; the stream route per frame), which bounds all the work in
flight, not only the queued part; a whole frame for the scene model also holds one of the
fewer `admit_frame()` places (service/pipeline.py), and a video one of `admit_video()`'s
(service/routes/video.py).

The batching task takes the oldest request and fills a batch of its key until it holds
`max_batch_size` requests (`scene_max_batch_size` frames for "segment") or the oldest one
has waited `max_wait_ms`; requests already queued beyond that wait join without waiting.
Inference runs in a single worker thread, never on the event loop. No free place or a full
queue is refused at once (Overloaded, 503); a request past its deadline gets
InferenceTimeout (504) and is dropped before inference; a batch error reaches every request
in the batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.detect import SceneSegmenter
from model.inference import Prediction, Predictor
from service.errors import InferenceFailed, InferenceTimeout, NotReady, Overloaded
from service.limits import Places

log = logging.getLogger(__name__)

CLASSIFY, SEGMENT = "classify", "segment"


@dataclass
class EngineResult:
    output: Any  # a Prediction ("classify"), float32 [N, C, h, w] maps ("segment")
    queue_ms: float  # enqueue to the start of its batch's inference
    inference_ms: float  # the whole batch's inference
    batch_size: int

    @property
    def prediction(self) -> Prediction:
        return self.output


@dataclass(eq=False)
class _Job:
    kind: str
    image: torch.Tensor
    size: tuple[int, int] | None
    top_k: int
    future: asyncio.Future[EngineResult]
    enqueued: float  # time.monotonic()
    deadline: float

    @property
    def key(self) -> tuple:
        """Jobs batch together only with jobs of the same key."""
        return (self.kind, tuple(self.image.shape[-2:]))


# Called after each batch with (batch size, inference seconds): the service's metrics hook.
BatchObserver = Callable[[int, float], None]


class Engine:
    def __init__(
        self,
        predictor: Predictor,
        *,
        scene: SceneSegmenter | None = None,
        scene_input: tuple[int, int] | None = None,
        max_batch_size: int = 16,
        scene_max_batch_size: int = 2,
        max_wait_ms: float = 5.0,
        queue_size: int = 256,
        scene_queue_size: int = 16,
        max_videos: int = 8,
        request_timeout_s: float = 30.0,
        on_batch: BatchObserver | None = None,
    ):
        """`scene` (optional): the scene model, warmed up at `scene_input` (h, w)."""
        if (
            min(max_batch_size, scene_max_batch_size, queue_size, scene_queue_size, max_videos) < 1
            or request_timeout_s <= 0
            or max_wait_ms < 0
        ):
            raise ValueError("engine limits must be positive")
        self.predictor = predictor
        self.scene = scene
        self.scene_input = scene_input
        self.max_batch_size = max_batch_size
        self.scene_max_batch_size = scene_max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.queue_size = queue_size
        self.scene_queue_size = scene_queue_size
        self.request_timeout_s = request_timeout_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        # Jobs taken off the queue while a batch of another key filled, by key, oldest first.
        self._held: dict[tuple, deque[_Job]] = {}
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._requests = Places(queue_size, "requests")
        self._frames = Places(scene_queue_size, "whole frames")
        self._videos = Places(max_videos, "videos")

    @property
    def ready(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queue_depth(self) -> int:
        held = sum(len(jobs) for jobs in self._held.values())
        return held + (self._queue.qsize() if self._queue is not None else 0)

    @property
    def admitted(self) -> int:
        return self._requests.taken

    @property
    def at_capacity(self) -> bool:
        return self._requests.full

    @property
    def capacity_message(self) -> str:
        return self._requests.message

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of `queue_size` places for a request from before its decoding until its
        answer is built. When all are taken the request is refused at once (Overloaded),
        before any work is spent on it: the queue alone would bound only the work after
        decoding, and under a flood the decoding itself would starve the model. So the
        latency of admitted requests stays near queue_size / throughput."""
        if not self.ready:
            raise NotReady()
        with self._requests.hold():
            yield

    def admit_frame(self) -> AbstractContextManager[None]:
        """Hold one of `scene_queue_size` places for a whole frame, within its request's
        `admit()` place; with none free the frame is refused at once (Overloaded). A frame
        costs the scene model what a hundred sign photos cost the sign model, so `queue_size`
        places alone would admit minutes of frames: a flood would then wait for the pixel
        budget until the request deadline and get its 503 after 30 s instead of at once."""
        return self._frames.hold()

    def admit_video(self) -> AbstractContextManager[None]:
        """Hold one of `max_videos` places for a video upload, from before its container is
        opened until its last line is sent; with none free it is refused at once
        (Overloaded). A video is seconds to minutes of work (a 30-s clip in scene mode takes
        about 100 s on 2 CPU cores): past a few at once, each would only run slower into its
        deadline."""
        return self._videos.hold()

    async def start(self) -> None:
        """Warm the model up in the worker thread, then start the batching task."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._warmup)
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._task = asyncio.create_task(self._batch_loop(), name="batching")

    async def stop(self) -> None:
        """Stop batching, refuse what is still queued, and let the worker thread finish."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = [job for jobs in self._held.values() for job in jobs]
        self._held.clear()
        while self._queue is not None and not self._queue.empty():
            left.append(self._queue.get_nowait())
        for job in left:
            if not job.future.done():
                job.future.set_exception(NotReady("the service is shutting down"))
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True)
            self._executor = None

    async def submit(
        self,
        image: torch.Tensor,
        size: tuple[int, int],
        top_k: int = 5,
        *,
        wait_for_room: bool = False,
    ) -> EngineResult:
        """Queue one preprocessed image ([3, S, S]; `size` its original (H, W)) for the crop
        model and wait for its prediction. A full queue raises Overloaded at once, unless
        `wait_for_room` (video frames: the upload paces itself) makes it wait for room
        within the deadline."""
        return await self._submit(CLASSIFY, image, size, top_k, wait_for_room)

    async def segment(self, tiles: torch.Tensor, *, wait_for_room: bool = False) -> EngineResult:
        """Queue a frame's input for the scene model ([N, 3, h, w]: the whole frame or its
        tiles) and wait for its sign (and core) probabilities (float32 [N, C, h, w])."""
        if self.scene is None:
            raise RuntimeError("this engine has no scene model")
        return await self._submit(SEGMENT, tiles, None, 0, wait_for_room)

    async def _submit(
        self,
        kind: str,
        image: torch.Tensor,
        size: tuple[int, int] | None,
        top_k: int,
        wait_for_room: bool,
    ) -> EngineResult:
        if not self.ready or self._queue is None:
            raise NotReady()
        now = time.monotonic()
        future = asyncio.get_running_loop().create_future()
        job = _Job(kind, image, size, top_k, future, now, now + self.request_timeout_s)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                if wait_for_room:
                    await self._queue.put(job)
                else:
                    self._queue.put_nowait(job)
                return await future
        except asyncio.QueueFull:
            raise Overloaded(f"the inference queue is full ({self.queue_size} waiting)") from None
        except TimeoutError:
            raise InferenceTimeout(
                f"no prediction within the request timeout ({self.request_timeout_s:g} s)"
            ) from None
        finally:
            # Timed out or the client went away: the batching task skips a done future.
            if not future.done():
                future.cancel()

    async def _batch_loop(self) -> None:
        while True:
            jobs = await self._collect_batch()
            jobs = [job for job in jobs if self._still_wanted(job)]
            if not jobs:
                continue
            try:
                await self._run_batch(jobs)
            except Exception:
                # The loop is the only way to the model: it must outlive any one batch.
                log.exception("batching failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(InferenceFailed("batching failed"))

    async def _collect_batch(self) -> list[_Job]:
        """A batch of one key, led by the oldest job waiting (held or queued)."""
        assert self._queue is not None
        if not self._held:
            first = await self._queue.get()
            self._held[first.key] = deque([first])
        key = min(self._held, key=lambda k: self._held[k][0].enqueued)
        waiting = self._held.pop(key)
        first = waiting[0]
        limit = self.scene_max_batch_size if first.kind == SEGMENT else self.max_batch_size
        jobs = [waiting.popleft() for _ in range(min(limit, len(waiting)))]
        if waiting:
            self._held[key] = waiting  # a full batch already: the rest lead later ones
        while len(jobs) < limit:
            remaining = first.enqueued + self.max_wait_s - time.monotonic()
            try:
                if remaining <= 0:
                    job = self._queue.get_nowait()
                else:
                    async with asyncio.timeout(remaining):
                        job = await self._queue.get()
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if not self._still_wanted(job):
                continue
            if job.key == key:
                jobs.append(job)
            else:
                self._held.setdefault(job.key, deque()).append(job)
        return jobs

    def _still_wanted(self, job: _Job) -> bool:
        """False for a job whose client gave up, or whose deadline has passed (it is answered
        with a timeout here, before any inference is spent on it)."""
        if job.future.done():
            return False
        if time.monotonic() >= job.deadline:
            job.future.set_exception(InferenceTimeout("the request waited past its deadline"))
            return False
        return True

    async def _run_batch(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            outputs = await loop.run_in_executor(self._executor, self._infer, jobs)
            if len(outputs) != len(jobs):
                raise RuntimeError(f"{len(outputs)} predictions for {len(jobs)} images")
        except asyncio.CancelledError:
            for job in jobs:  # stop() during inference: nobody will deliver these results
                if not job.future.done():
                    job.future.set_exception(NotReady("the service is shutting down"))
            raise
        except Exception as error:
            log.exception("inference failed on a batch of %d", len(jobs))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(InferenceFailed(f"inference failed: {error}"))
            return
        finished = time.monotonic()
        for job, output in zip(jobs, outputs, strict=True):
            if not job.future.done():
                if job.kind == CLASSIFY:
                    output = dataclasses.replace(output, top_k=output.top_k[: job.top_k])
                job.future.set_result(
                    EngineResult(
                        output=output,
                        queue_ms=(started - job.enqueued) * 1000,
                        inference_ms=(finished - started) * 1000,
                        batch_size=len(jobs),
                    )
                )
        if self._on_batch is not None:
            self._on_batch(len(jobs), finished - started)

    def _infer(self, jobs: list[_Job]) -> list[Any]:
        """In the worker thread: stack the batch (a copy worth keeping off the loop) and run
        its model; the crop model with the largest top_k asked for in the batch."""
        if jobs[0].kind == SEGMENT:
            assert self.scene is not None
            probabilities = self.scene.probabilities(torch.cat([job.image for job in jobs]))
            ends = np.cumsum([len(job.image) for job in jobs])
            return np.split(probabilities, ends[:-1])
        batch = torch.stack([job.image for job in jobs])
        top_k = max(job.top_k for job in jobs)
        return self.predictor.predict_batch(batch, [job.size for job in jobs], top_k)

    def _warmup(self) -> None:
        self.predictor.warmup(self.max_batch_size)
        if self.scene is not None and self.scene_input is not None:
            self.scene.warmup(self.scene_input)
