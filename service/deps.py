"""Dependencies as `Annotated` aliases: what a route needs comes from the app's state, set
up once by `create_app` and its lifespan."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from service.engine import Engine
from service.errors import NotReady, Unauthorized
from service.metrics import ServiceMetrics
from service.pipeline import Pipeline
from service.settings import Settings

API_KEY_HEADER = "X-API-Key"
_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


def get_settings(connection: HTTPConnection) -> Settings:
    return connection.app.state.settings


def get_metrics(connection: HTTPConnection) -> ServiceMetrics:
    return connection.app.state.metrics


def get_engine(connection: HTTPConnection) -> Engine:
    engine: Engine | None = connection.app.state.engine
    if engine is None or not engine.ready:
        raise NotReady()
    return engine


def get_pipeline(engine: Annotated[Engine, Depends(get_engine)], connection: HTTPConnection):
    pipeline: Pipeline = connection.app.state.pipeline
    return pipeline


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]


def api_key_matches(provided: str | None, settings: Settings) -> bool:
    """True when no key is configured, or `provided` equals it (constant-time compare)."""
    if settings.api_key is None:
        return True
    if provided is None:
        return False
    return hmac.compare_digest(
        provided.encode("utf-8"), settings.api_key.get_secret_value().encode("utf-8")
    )


async def require_api_key(
    settings: SettingsDep,
    provided: Annotated[str | None, Security(_api_key_header)],
) -> None:
    if not api_key_matches(provided, settings):
        raise Unauthorized(f"missing or wrong {API_KEY_HEADER} header")


ApiKey = Depends(require_api_key)
