"""Response models of the API, and the one function that turns an engine result into one."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from model.detect import box_mask_rle, frame_mask
from model.inference import mask_to_png_base64, mask_to_rle
from service.decode import PreparedImage
from service.engine import EngineResult
from service.errors import ErrorDetail

MAX_TOP_K = 58


class MaskFormat(StrEnum):
    png = "png"
    rle = "rle"
    none = "none"


class ClassScore(BaseModel):
    class_id: int
    class_name: str
    confidence: float


class Mask(BaseModel):
    format: Literal["png", "rle"]
    size: tuple[int, int] = Field(description="[height, width] of the original image")
    data: str | list[int] = Field(
        description="png: base64 of a 1-bit PNG at the original size; rle: COCO RLE counts "
        "(column-major, uncompressed, starting with the background run)"
    )


class Timings(BaseModel):
    decode: float = Field(description="decode, validate and preprocess, ms")
    queue: float = Field(description="wait in the batching queue, ms")
    inference: float = Field(description="the batch's model time, ms")
    total: float = Field(description="from the upload received to the response built, ms")


class Prediction(BaseModel):
    kind: Literal["sign", "unknown_sign", "no_sign"] = Field(
        description="sign: one of the model's classes; unknown_sign: a sign of none of them "
        "(or one the model is too unsure of); no_sign: no sign in the picture"
    )
    class_id: int | None = Field(description="the class; null for unknown_sign and no_sign")
    class_name: str = Field(description='the class name, "unknown sign" or "no sign"')
    confidence: float = Field(description="probability of the answer")
    top_k: list[ClassScore] = Field(description="the most probable of the model's classes")
    box: tuple[int, int, int, int] | None = Field(
        description="[x1, y1, x2, y2] of the mask in original pixels (x2, y2 exclusive); "
        "null when no sign pixel was found"
    )
    mask: Mask | None
    image_size: tuple[int, int] = Field(description="[height, width], upright (EXIF applied)")
    timings_ms: Timings


class Sign(BaseModel):
    box: tuple[int, int, int, int] = Field(
        description="[x1, y1, x2, y2] in original pixels (x2, y2 exclusive): the mask's box"
    )
    mask: Mask | None = Field(description="this sign's mask over the whole image")
    kind: Literal["sign", "unknown_sign"] = Field(
        description="sign: one of the model's classes; unknown_sign: a sign of none of them"
    )
    class_id: int | None = Field(description="the class; null for unknown_sign")
    class_name: str = Field(description='the class name, or "unknown sign"')
    confidence: float = Field(description="the classifier's probability of the answer")
    score: float = Field(description="the segmentation's: mean sign probability of its pixels")


class TrackedSign(Sign):
    track_id: int = Field(
        description="the same physical sign keeps its id from frame to frame; its class is "
        "the vote of the frames it was seen in so far"
    )


class SceneTimings(Timings):
    segment: float = Field(description="the scene model's batch, ms")
    instances: float = Field(description="instances from the mask and their crops, ms")
    classify: float = Field(description="the crop model's batches, ms")


class Detections(BaseModel):
    signs: list[Sign] = Field(description="every sign found, best segmentation score first")
    image_size: tuple[int, int] = Field(description="[height, width], upright (EXIF applied)")
    timings_ms: SceneTimings


class TrackedDetections(Detections):
    signs: list[TrackedSign]


class BatchPrediction(Prediction):
    filename: str | None


class BatchError(BaseModel):
    filename: str | None
    error: ErrorDetail


class ModelClass(BaseModel):
    class_id: int
    class_name: str


class OpenSet(BaseModel):
    answers: list[str] = Field(description='besides the classes: "unknown sign", "no sign"')
    threshold: float = Field(
        description="a class whose probability is below it is answered unknown_sign"
    )
    trained: bool = Field(
        description="whether its outputs for them learned from examples (signs of no class, "
        "pictures with no sign); else unknown_sign comes from the threshold alone"
    )


class SceneModelDescription(BaseModel):
    file: str
    method: str
    arch: str
    metrics: dict[str, Any]
    long_side: int = Field(description="frames are resized to this longer side")
    max_upscale: float = Field(
        description="a smaller frame is enlarged toward the long side by at most this factor"
    )
    tile: int = Field(description="0: whole frames; else the tile side")
    threshold: float
    read_margin: float = Field(
        description="each sign is read cut with this share of its width and height added"
    )
    split_touching: bool = Field(
        description="signs that touch are parted (between their cores, or at their neck)"
    )
    require_core: bool = Field(
        description="with a scene model that draws cores, regions without one are dropped"
    )
    part_boards: bool = Field(
        description="a region of direction boards stacked flush is parted at its seams"
    )
    min_solidity: float = Field(
        description="a region whose mask fills less of its convex hull is dropped"
    )
    mirror: bool = Field(
        description="each frame is also run mirrored and the two probabilities averaged"
    )
    dtype: str = Field(description="what the scene pass runs in: float32, float16 or bfloat16")


class ModelDescription(BaseModel):
    file: str
    dataset: str
    method: str
    arch: str
    image_size: int
    num_classes: int
    classes: list[ModelClass]
    open_set: OpenSet
    split: dict[str, Any]
    metrics: dict[str, Any]
    data_fingerprint: str
    device: str
    fp16: bool
    scene_model: SceneModelDescription | None = Field(
        description="the model that finds signs in whole frames (scene mode); null: none"
    )


def encode_mask(mask: np.ndarray, mask_format: MaskFormat) -> Mask | None:
    if mask_format is MaskFormat.none:
        return None
    height, width = mask.shape
    data = mask_to_png_base64(mask) if mask_format is MaskFormat.png else mask_to_rle(mask)
    return Mask(format=mask_format.value, size=(height, width), data=data)


def encode_box_mask(
    mask: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int], mask_format: MaskFormat
) -> Mask | None:
    """A box-shaped instance mask, encoded over the whole image."""
    if mask_format is MaskFormat.none:
        return None
    height, width = size
    if mask_format is MaskFormat.png:
        data: str | list[int] = mask_to_png_base64(frame_mask(mask, box, height, width))
    else:
        data = box_mask_rle(mask, box, height, width)
    return Mask(format=mask_format.value, size=(height, width), data=data)


def prediction_response(
    result: EngineResult,
    prepared: PreparedImage,
    mask_format: MaskFormat,
    started: float,
) -> Prediction:
    """The API's view of one prediction. Encodes the mask, so call it off the event loop;
    `started` is the request's time.perf_counter() start, for timings_ms.total."""
    prediction = result.prediction
    mask = encode_mask(prediction.mask, mask_format)
    return Prediction(
        kind=prediction.kind,
        class_id=prediction.class_id,
        class_name=prediction.class_name,
        confidence=prediction.confidence,
        top_k=[ClassScore(**vars(score)) for score in prediction.top_k],
        box=prediction.box,
        mask=mask,
        image_size=prepared.size,
        timings_ms=Timings(
            decode=prepared.decode_ms,
            queue=result.queue_ms,
            inference=result.inference_ms,
            total=(time.perf_counter() - started) * 1000,
        ),
    )
