"""POST /v1/predict (one image) and /v1/predict/batch (several, each answered on its own)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile

from service.deps import PipelineDep
from service.errors import ERROR_RESPONSES, ErrorDetail, ServiceError
from service.pipeline import Options, Pipeline
from service.schemas import (
    MAX_TOP_K,
    BatchError,
    BatchPrediction,
    MaskFormat,
    Prediction,
)

router = APIRouter(prefix="/v1", tags=["predict"])

TopK = Annotated[int, Query(ge=1, le=MAX_TOP_K, description="how many classes to list")]
MaskFormatQuery = Annotated[
    MaskFormat, Query(description="png: base64 1-bit PNG; rle: COCO RLE counts; none")
]
IMAGE_HELP = "JPEG, PNG, WebP, GIF, BMP, TIFF or PPM (judged by content, not by name)"


@router.post("/predict", responses=ERROR_RESPONSES)
async def predict(
    file: Annotated[UploadFile, File(description=f"the image: {IMAGE_HELP}")],
    pipeline: PipelineDep,
    top_k: TopK = 5,
    mask_format: MaskFormatQuery = MaskFormat.png,
) -> Prediction:
    """Class, top-k, sign box and mask of one image."""
    return await pipeline.answer(
        file.file, pipeline.classify, Options(top_k, mask_format), started=time.perf_counter()
    )


@router.post("/predict/batch", responses=ERROR_RESPONSES)
async def predict_batch(
    files: Annotated[list[UploadFile], File(description=f"the images: {IMAGE_HELP}")],
    pipeline: PipelineDep,
    top_k: TopK = 5,
    mask_format: MaskFormatQuery = MaskFormat.png,
) -> list[BatchPrediction | BatchError]:
    """One item per file, in order: a prediction, or that file's own error (the others are
    still answered). The files are queued together, so they share inference batches."""
    started = time.perf_counter()
    options = Options(top_k, mask_format)
    return list(
        await asyncio.gather(*(_batch_item(file, pipeline, options, started) for file in files))
    )


async def _batch_item(
    file: UploadFile, pipeline: Pipeline, options: Options, started: float
) -> BatchPrediction | BatchError:
    try:
        prediction = await pipeline.answer(file.file, pipeline.classify, options, started=started)
    except ServiceError as error:
        return BatchError(
            filename=file.filename, error=ErrorDetail(code=error.code, message=error.message)
        )
    return BatchPrediction(filename=file.filename, **dict(prediction))
