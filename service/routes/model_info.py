"""GET /v1/model: what the served models are, as their files describe them."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from service.deps import PipelineDep
from service.errors import ERROR_RESPONSES
from service.schemas import ModelClass, ModelDescription, OpenSet, SceneModelDescription

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", responses=ERROR_RESPONSES)
async def model(pipeline: PipelineDep) -> ModelDescription:
    predictor = pipeline.predictor
    info = predictor.info
    scene = None
    if pipeline.scene is not None:
        segmenter, config = pipeline.engine.scene, pipeline.scene.config
        assert segmenter is not None
        scene = SceneModelDescription(
            file=Path(segmenter.info.path).name,
            method=segmenter.info.method,
            arch=segmenter.info.config.arch,
            metrics=segmenter.info.metrics,
            long_side=config.long_side,
            max_upscale=config.max_upscale,
            tile=config.tile,
            threshold=config.threshold,
            read_margin=config.margin,
            split_touching=config.split_touching,
            require_core=config.require_core,
            part_boards=config.part_boards,
            min_solidity=config.min_solidity,
            mirror=segmenter.mirror,
            dtype=segmenter.dtype_name,
        )
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
            trained=info.open_set_trained(predictor.num_known),
        ),
        split=info.split,
        metrics=info.metrics,
        data_fingerprint=info.data_fingerprint,
        device=str(predictor.device),
        fp16=predictor.fp16,
        scene_model=scene,
    )
