"""The one path every image takes through the service: /v1/predict, each file of
/v1/predict/batch and each frame of /v1/stream (video frames take the same steps, paced by
their own loop in routes/video.py).

    header checks ─▶ pixel budget ─▶ decode, shrunk, + preprocess ─▶ engine ─▶ encode
      (threadpool)    (reserve W×H)       (threadpool)                          (threadpool)

The image's pixels stay reserved until its answer is built: its mask comes back at full
size, so the answer costs memory in proportion to the original, not to the network input.
After a large image the process gives its freed memory back to the system.
"""

from __future__ import annotations

import time
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool

from service import memory
from service.decode import ImageLimits, image_pixels, prepare_image
from service.engine import Engine
from service.limits import PixelBudget
from service.schemas import MaskFormat, Prediction, prediction_response

# Images decode no smaller than this many times the network's input side: enough for the
# area resize that follows to see every detail it can keep.
SHRINK_MARGIN = 4
# From this many pixels on, an image's answer is followed by giving memory back.
LARGE_IMAGE_PIXELS = 4_000_000


def shrink_side(engine: Engine) -> int:
    return SHRINK_MARGIN * engine.predictor.image_size


async def predict_image(
    source: bytes | BinaryIO,
    *,
    engine: Engine,
    budget: PixelBudget,
    limits: ImageLimits,
    top_k: int,
    mask_format: MaskFormat,
    started: float | None = None,
) -> Prediction:
    """Class, top-k, box and mask of one untrusted image; ServiceError for a bad one."""
    started = time.perf_counter() if started is None else started
    pixels = await run_in_threadpool(image_pixels, source, limits)
    async with budget.reserve(pixels):
        prepared = await run_in_threadpool(
            prepare_image, source, limits, engine.predictor.preprocess, shrink_side(engine)
        )
        result = await engine.submit(prepared.tensor, prepared.size, top_k)
        prediction = await run_in_threadpool(
            prediction_response, result, prepared, mask_format, started
        )
    if pixels >= LARGE_IMAGE_PIXELS:
        memory.give_back_soon()
    return prediction
