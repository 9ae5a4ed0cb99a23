"""`create_app(settings)`: the FastAPI service. The model is loaded and warmed up in the
lifespan (a missing or broken model stops start-up with the reason); /readyz says 503 until
then and again while shutting down; /healthz is always 200."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from model.inference import Predictor
from model.runs import resolve_model
from service.access import AccessGuard
from service.deps import ApiKey
from service.engine import Engine
from service.errors import install_error_handlers
from service.limits import Admission, BodyLimits, PixelBudget
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.routes import health, model_info, predict, stream, video
from service.settings import Settings

log = logging.getLogger(__name__)

# The browser app lives in app/web/; it is served by path, as files (service never imports
# app), and only once it exists.
WEB_DIR = Path(__file__).resolve().parent.parent / "app" / "web"
# The routes that go through the engine: admission control applies to them.
INFERENCE_PATHS = {"/v1/predict", "/v1/predict/batch", "/v1/video"}


def create_app(settings: Settings) -> FastAPI:
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model_path = resolve_model(settings.model)
        predictor = await asyncio.to_thread(Predictor.load, model_path, settings.device)
        engine = Engine(
            predictor,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            queue_size=settings.queue_size,
            request_timeout_s=settings.request_timeout_s,
            on_batch=metrics.observe_batch,
        )
        await engine.start()
        metrics.track_engine(lambda: engine.queue_depth, lambda: engine.admitted)
        app.state.engine = engine
        log.info(
            "serving %s (%s, %d classes) on %s%s",
            model_path,
            predictor.info.config.arch,
            len(predictor.class_names),
            predictor.device,
            " fp16" if predictor.fp16 else "",
        )
        try:
            yield
        finally:
            app.state.engine = None  # not ready from here on
            await engine.stop()

    app = FastAPI(
        title="GreedySign",
        summary="Traffic-sign class and mask for images, videos and live streams",
        version=_package_version(),
        lifespan=lifespan,
        form_limits={"max_files": settings.max_batch_files, "max_fields": 16},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = None
    app.state.pixel_budget = PixelBudget(settings.pixel_budget, settings.request_timeout_s)
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
    app.include_router(video.router, dependencies=[ApiKey])
    # The WebSocket checks its key itself: browsers cannot set headers on one.
    app.include_router(stream.router)
    if (WEB_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def _package_version() -> str:
    try:
        return version("greedysign")
    except PackageNotFoundError:
        return "0+unknown"


def app_from_environment() -> FastAPI:
    """Factory for `uvicorn --factory` and multi-worker serving: settings from GREEDYSIGN_*."""
    return create_app(Settings())
