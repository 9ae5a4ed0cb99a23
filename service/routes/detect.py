"""POST /v1/detect: every sign in one image (a whole road frame), each with its box, mask and
class; 503 `no_scene_model` when the service has no scene model."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from service.deps import PipelineDep
from service.errors import ERROR_RESPONSES
from service.pipeline import SCENE, Options
from service.routes.predict import IMAGE_HELP, MaskFormatQuery
from service.schemas import Detections, MaskFormat

router = APIRouter(prefix="/v1", tags=["detect"])


@router.post("/detect", responses=ERROR_RESPONSES)
async def detect(
    file: Annotated[UploadFile, File(description=f"the frame: {IMAGE_HELP}")],
    pipeline: PipelineDep,
    mask_format: MaskFormatQuery = MaskFormat.png,
) -> Detections:
    """Find every sign in a frame: the scene model marks sign pixels, each connected region
    is cut from the original with a margin and read by the sign model; regions it reads as
    "no sign" are dropped. An image with no sign gets an empty list."""
    started = time.perf_counter()
    mode = pipeline.mode(SCENE)
    return await pipeline.answer(file.file, mode, Options(1, mask_format), started=started)
