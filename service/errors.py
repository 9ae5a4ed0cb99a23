"""Every error the service returns has one shape, `{"error": {"code", "message"}}`, and comes
from this module: the domain exceptions raised by decoding, the engine and the routes, and
FastAPI's own errors (validation, 404, 405, 413 from the body limit) reshaped to match."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

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


class Unauthorized(ServiceError):
    status_code, code = 401, "unauthorized"


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


async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=error)
    return JSONResponse(error_body("internal_error", "internal server error"), 500)


def describe_validation(error: RequestValidationError) -> str:
    """FastAPI's error list as one readable line: `query.top_k: Input should be ...; ...`."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item.get("loc", ()))
        parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Exception (not a status) is served by Starlette's outermost ServerErrorMiddleware, so
    # even a failure in a middleware ends as a JSON 500 rather than a bare text page.
    app.add_exception_handler(Exception, _unexpected)


# OpenAPI `responses=` for routes, so clients (and schemathesis) know the error shape.
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse} for status in (401, 408, 413, 415, 422, 503, 504)
}
