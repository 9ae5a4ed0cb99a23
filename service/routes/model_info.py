"""GET /v1/model: what the served model is, as its file describes it."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from service.deps import PredictorDep
from service.errors import ERROR_RESPONSES
from service.schemas import ModelClass, ModelDescription, OpenSet

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", responses=ERROR_RESPONSES)
async def model(predictor: PredictorDep) -> ModelDescription:
    info = predictor.info
    return ModelDescription(
        file=Path(info.path).name,
        dataset=info.dataset,
        method=info.method,
        arch=info.config.arch,
        image_size=info.config.image_size,
        num_classes=len(predictor.class_names),
        classes=[ModelClass(class_id=i, class_name=n) for i, n in enumerate(predictor.class_names)],
        open_set=OpenSet(
            answers=predictor.label_names[predictor.num_known :],
            threshold=predictor.threshold,
            trained=len(info.class_names) > predictor.num_known,
        ),
        split=info.split,
        metrics=info.metrics,
        data_fingerprint=info.data_fingerprint,
        device=str(predictor.device),
        fp16=predictor.fp16,
    )
