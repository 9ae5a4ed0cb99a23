"""Prometheus metrics, in a registry per app (two apps in one process, as in the tests, never
share counts): requests by route and status, latency, batch sizes, inference time, queue
depth, video frames and dropped stream frames."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "greedysign_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "greedysign_http_request_seconds",
            "HTTP request latency (to the end of the response body)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "greedysign_batch_size",
            "images per inference batch",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "greedysign_inference_seconds",
            "model time per batch",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "greedysign_queue_depth", "requests waiting for a batch", registry=self.registry
        )
        self.in_flight = Gauge(
            "greedysign_in_flight",
            "requests admitted: decoding, queued or in inference",
            registry=self.registry,
        )
        self.video_frames = Counter(
            "greedysign_video_frames",
            "video frames predicted via /v1/video",
            registry=self.registry,
        )
        self.stream_frames = Counter(
            "greedysign_stream_frames",
            "WebSocket frames received, by outcome (answered, dropped, error)",
            ["outcome"],
            registry=self.registry,
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference_seconds.observe(seconds)

    def track_engine(
        self, queue_depth: Callable[[], float], in_flight: Callable[[], float]
    ) -> None:
        self.queue_depth.set_function(queue_depth)
        self.in_flight.set_function(in_flight)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI: counts every HTTP request by its route template (`/v1/predict`, never the
    raw path, so a scan of random URLs cannot blow up the label set) and final status.
    Requests refused by a middleware before routing (413, 503) are labelled with their path
    when it is one of `known_paths`, else "unmatched"."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, known_paths: set[str]):
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app gets as far as starting a response

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is None:
                route = scope["path"] if scope["path"] in self.known_paths else "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
