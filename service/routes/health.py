"""Liveness, readiness and metrics: always open, even when an API key is set."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.deps import MetricsDep
from service.errors import NotReady

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving (whether or not the model is loaded)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the model is not loaded (yet)"}})
async def readyz(request: Request) -> dict[str, str]:
    """200 once the model is loaded and warmed up, 503 before that and while shutting down."""
    engine = request.app.state.engine
    if engine is None or not engine.ready:
        raise NotReady()
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(service_metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    body, content_type = service_metrics.render()
    return Response(body, media_type=content_type)
