"""Every error the service returns has one shape, `{"error": {"code", "message"}}`, and comes
from this module: the domain exceptions raised by decoding, the engine and the routes, and
FastAPI's own errors (validation, 404, 405, 413 from the body limit) reshaped to match.

A WebSocket handshake the service refuses (a bad query parameter, a wrong key or origin, not
ready, no stream place left) gets the same answer as an HTTP route would give, JSON with its
4xx/5xx status and headers, through ASGI's denial-response extension (uvicorn and Starlette's
TestClient have it); only a server without it makes `refuse_handshake` fall back to a close
code with the message as its reason (which the server shows a client as a bare 403)."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import (
    RequestValidationError,
    ValidationException,
    WebSocketRequestValidationError,
)
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketState

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A failure the client can act on. Subclasses fix the status and the code."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.code, self.message)


class PayloadTooLarge(ServiceError):
    status_code, code = 413, "payload_too_large"


class UnsupportedMedia(ServiceError):
    """The content (sniffed, never the extension) is not a format this route accepts."""

    status_code, code = 415, "unsupported_media_type"


class InvalidImage(ServiceError):
    """An image format we accept, but the file is empty, cut short or corrupt."""

    status_code, code = 422, "invalid_image"


class EmptyFile(ServiceError):
    status_code, code = 422, "empty_file"


class ImageTooLarge(ServiceError):
    """More pixels than max_pixels (a decompression bomb), found from the header alone."""

    status_code, code = 422, "image_too_large"


class ImageTooSmall(ServiceError):
    status_code, code = 422, "image_too_small"


class InvalidVideo(ServiceError):
    status_code, code = 422, "invalid_video"


class InvalidParameters(ServiceError):
    """Query parameters FastAPI refused, where no RequestValidationError can say so (the
    WebSocket): the same status and code as an HTTP route's validation error."""

    status_code, code = 422, "validation_error"


class Unauthorized(ServiceError):
    status_code, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status_code, code = 403, "forbidden"


class NotFound(ServiceError):
    status_code, code = 404, "not_found"


class UpgradeRequired(ServiceError):
    """Plain HTTP on a path that only speaks WebSocket."""

    status_code, code = 426, "upgrade_required"

    def __init__(self, message: str):
        super().__init__(message, headers={"Upgrade": "websocket", "Connection": "Upgrade"})


class BodyTimeout(ServiceError):
    """The client stopped sending its request body (an idle or trickling upload)."""

    status_code, code = 408, "request_timeout"


class NotReady(ServiceError):
    status_code, code = 503, "not_ready"

    def __init__(self, message: str = "the model is not loaded yet"):
        super().__init__(message, headers={"Retry-After": "1"})


class NoSceneModel(ServiceError):
    """Scene mode asked of a service started without a scene model."""

    status_code, code = 503, "no_scene_model"

    def __init__(
        self,
        message: str = "this service has no scene model, so it cannot find signs in whole "
        "frames: start it with scene mode on (GREEDYSIGN_SCENES not false) and --scene-model "
        "FILE (or GREEDYSIGN_SCENE_MODEL), a model trained with `greedysign train --task scenes`",
    ):
        super().__init__(message)


class Overloaded(ServiceError):
    status_code, code = 503, "overloaded"

    def __init__(self, message: str = "the inference queue is full", retry_after_s: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class InferenceTimeout(ServiceError):
    status_code, code = 504, "timeout"


class InferenceFailed(ServiceError):
    """The model itself failed on a batch: a server fault, reported to every waiter."""

    status_code, code = 500, "inference_failed"


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


# Codes for the HTTP errors FastAPI and Starlette raise themselves.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _status_phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_")
    except ValueError:
        return f"http_{status_code}"


async def _service_error(_request: Request, error: ServiceError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)


async def _http_exception(_request: Request, error: HTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(error.status_code) or _status_phrase(error.status_code)
    body = error_body(code, str(error.detail))
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse(error_body("validation_error", describe_validation(error)), 422)


async def _websocket_validation_error(
    websocket: WebSocket, error: WebSocketRequestValidationError
) -> None:
    """A bad query parameter on the WebSocket (`mode=bogus`): a JSON 422, as on HTTP routes,
    rather than FastAPI's bare close (which a client sees as a 403, like a refused origin)."""
    refusal = InvalidParameters(describe_validation(error))
    if websocket.client_state == WebSocketState.CONNECTING:
        await refuse_handshake(websocket.scope, websocket.send, refusal, POLICY_VIOLATION)
    else:  # accepted already: only a close can say it
        await websocket.close(POLICY_VIOLATION, close_reason(refusal.message))


def _refuse_unknown_websocket(not_found: ASGIApp) -> ASGIApp:
    """The router's answer to a path no route serves: a WebSocket to one gets a JSON 404, as
    HTTP does, rather than Starlette's bare close (which a client sees as an empty 403)."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await not_found(scope, receive, send)
            return
        refusal = NotFound(f"no WebSocket route at {scope.get('path', '')!r}: use /v1/stream")
        await refuse_handshake(scope, send, refusal, POLICY_VIOLATION)

    return answer


async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=error)
    return JSONResponse(error_body("internal_error", "internal server error"), 500)


def describe_validation(error: ValidationException) -> str:
    """FastAPI's error list as one readable line: `query.top_k: Input should be ...; ...`."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    app.router.default = _refuse_unknown_websocket(app.router.default)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(WebSocketRequestValidationError, _websocket_validation_error)
    # Exception (not a status) is served by Starlette's outermost ServerErrorMiddleware, so
    # even a failure in a middleware ends as a JSON 500 rather than a bare text page.
    app.add_exception_handler(Exception, _unexpected)


# WebSocket close codes (RFC 6455 and the IANA registry).
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
DENIAL_RESPONSE = "websocket.http.response"  # the ASGI extension


def close_reason(message: str) -> str:
    """`message` as a WebSocket close reason: ASCII, within the 123 bytes a reason may have."""
    return message.encode("ascii", "replace").decode("ascii")[:120]


async def refuse_handshake(scope: Scope, send: Send, error: ServiceError, close_code: int) -> None:
    """Refuse a WebSocket handshake with `error`'s HTTP answer (JSON, its status and headers)
    when the server has ASGI's denial-response extension, else with `close_code` and the
    message as the reason. Pure ASGI, so that middlewares can use it too."""
    if DENIAL_RESPONSE not in (scope.get("extensions") or {}):
        await send(
            {"type": "websocket.close", "code": close_code, "reason": close_reason(error.message)}
        )
        return
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
    ]
    await send(
        {"type": "websocket.http.response.start", "status": error.status_code, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": body})


# OpenAPI `responses=` for routes, so clients (and schemathesis) know the error shape.
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse} for status in (401, 408, 413, 415, 422, 503, 504)
}
