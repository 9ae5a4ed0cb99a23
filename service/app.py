"""`create_app(settings, web_dir)`: the FastAPI service. The models (the sign model and, for
scene mode, the scene model) are loaded and warmed up in the lifespan (a missing or broken
model stops start-up with the reason); /readyz says 503 until then and again while shutting
down; /healthz is always 200. The browser app is served from `web_dir` when one is given
(`greedysign serve` gives app/web): the service itself knows nothing of it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Scope

from model.detect import SHIPPED_SCENE_MODEL, DetectConfig, SceneSegmenter, prepare_frame
from model.inference import Predictor
from model.runs import resolve_model
from service import memory
from service.access import AccessGuard, hide_keys_in_server_logs
from service.decode import ImageLimits
from service.deps import ApiKey
from service.engine import Engine
from service.errors import install_error_handlers
from service.limits import Admission, BodyLimits, PixelBudget, Places
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.pipeline import Pipeline
from service.routes import detect, health, model_info, predict, stream, video
from service.settings import Settings

log = logging.getLogger(__name__)

# The routes that go through the engine: admission control applies to them.
INFERENCE_PATHS = {"/v1/predict", "/v1/predict/batch", "/v1/video", "/v1/detect"}
# Scene models are warmed up at the input of a 1280x720 frame, the common dashcam size.
TYPICAL_FRAME = (720, 1280)


def scene_model_path(settings: Settings) -> Path | None:
    """The scene model to load: the one set, else the shipped one when the package has it;
    None when scene mode is off or there is none."""
    if not settings.scenes:
        return None
    if settings.scene_model is not None:
        return settings.scene_model
    return SHIPPED_SCENE_MODEL if SHIPPED_SCENE_MODEL.is_file() else None


def detect_config(settings: Settings) -> DetectConfig:
    return DetectConfig(
        long_side=settings.scene_long_side,
        tile=settings.scene_tile,
        max_upscale=settings.scene_max_upscale,
        threshold=settings.scene_threshold,
        margin=settings.scene_read_margin,
        split_touching=settings.scene_split_touching,
        require_core=settings.scene_require_core,
        part_boards=settings.scene_part_boards,
        min_solidity=settings.scene_min_solidity,
    )


def create_app(settings: Settings, web_dir: Path | None = None) -> FastAPI:
    """The service; `web_dir` (default: settings.web_dir) holds the browser app."""
    metrics = ServiceMetrics()
    web_dir = web_dir or settings.web_dir

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        memory.bound_kernel_cache()
        hide_keys_in_server_logs()
        model_path = resolve_model(settings.model)
        predictor = await asyncio.to_thread(Predictor.load, model_path, settings.device)
        scene_path = scene_model_path(settings)
        scene = None
        config = detect_config(settings)
        if scene_path is not None:
            scene = await asyncio.to_thread(
                SceneSegmenter.load,
                scene_path,
                predictor.device,
                mirror=settings.scene_mirror,
                bf16=settings.scene_bf16,
            )
        engine = Engine(
            predictor,
            scene=scene,
            scene_input=_scene_input(config),
            max_batch_size=settings.max_batch_size,
            scene_max_batch_size=settings.scene_max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            scene_queue_size=settings.scene_queue_size,
            max_videos=settings.max_videos,
            request_timeout_s=settings.request_timeout_s,
            on_batch=metrics.observe_batch,
        )
        await engine.start()
        metrics.track_engine(lambda: engine.queue_depth, lambda: engine.admitted)
        limits = ImageLimits(max_pixels=settings.max_pixels, min_side=settings.min_image_side)
        app.state.pipeline = Pipeline(engine, predictor, app.state.pixel_budget, limits, config)
        app.state.engine = engine
        log.info(
            "serving %s (%s, %d classes) on %s%s; scene model: %s",
            model_path,
            predictor.info.config.arch,
            len(predictor.class_names),
            predictor.device,
            " fp16" if predictor.fp16 else "",
            scene_path or "none (scene mode off)",
        )
        try:
            yield
        finally:
            app.state.engine = None  # not ready from here on
            await engine.stop()

    app = FastAPI(
        title="GreedySign",
        summary="Traffic-sign class and mask for images, videos and live streams; every sign "
        "of a whole road frame, tracked across frames",
        version=_package_version(),
        lifespan=lifespan,
        form_limits={"max_files": settings.max_batch_files, "max_fields": 16},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = None
    app.state.pipeline = None
    app.state.pixel_budget = PixelBudget(settings.pixel_budget, settings.request_timeout_s)
    app.state.streams = Places(settings.max_streams, "streams")
    install_error_handlers(app)
    # Middlewares, added innermost first. A request meets them outermost first: metrics,
    # CORS (so that refusals carry its headers too, and preflights need no key), the key
    # and origin check (headers only), the body's size and pace, and admission (a place once
    # the body is in). Each refuses what it can before the next one spends anything.
    app.add_middleware(Admission, paths=INFERENCE_PATHS)
    app.add_middleware(
        BodyLimits,
        default_limit=settings.max_upload_bytes,
        limits_by_path={"/v1/video": settings.max_video_bytes},
        read_timeout_s=settings.body_read_timeout_s,
    )
    app.add_middleware(AccessGuard, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
    # Outermost, so that it counts what the middlewares inside it refuse too.
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=INFERENCE_PATHS)

    app.include_router(health.router)
    app.include_router(model_info.router, dependencies=[ApiKey])
    app.include_router(predict.router, dependencies=[ApiKey])
    app.include_router(detect.router, dependencies=[ApiKey])
    app.include_router(video.router, dependencies=[ApiKey])
    # The WebSocket checks its key itself: browsers cannot set headers on one.
    app.include_router(stream.router)
    if web_dir is not None:
        if not (Path(web_dir) / "index.html").is_file():
            raise ValueError(f"web_dir {web_dir} holds no index.html")
        app.router.routes.append(
            _WebApp(app.router.routes, StaticFiles(directory=web_dir, html=True), name="web")
        )
    return app


class _WebApp(Mount):
    """The browser app, mounted at "/": every path the service's own routes leave. A path one
    of them serves with another method (GET /v1/predict) is theirs, so it gets their 405 with
    `Allow`, not the web app's 404; and a WebSocket to no route gets the router's refusal
    rather than reaching StaticFiles, which serves HTTP only."""

    def __init__(self, siblings: list[BaseRoute], app: ASGIApp, name: str):
        super().__init__("/", app=app, name=name)
        self.siblings = siblings

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or any(
            route.matches(scope)[0] != Match.NONE for route in self.siblings if route is not self
        ):
            return Match.NONE, {}
        return super().matches(scope)


def _scene_input(config: DetectConfig) -> tuple[int, int]:
    """The scene model's input shape (h, w) for a typical frame: a tile's, or the frame's."""
    frame = prepare_frame(np.zeros((*TYPICAL_FRAME, 3), np.uint8), config)
    return tuple(frame.tensor.shape[-2:])


def _package_version() -> str:
    try:
        return version("greedysign")
    except PackageNotFoundError:
        return "0+unknown"


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` and multi-worker serving: settings from GREEDYSIGN_*."""
    return create_app(Settings())
