"""Two pure ASGI middlewares that refuse work before it is done.

BodySizeLimit: a body whose Content-Length is over its route's limit is refused before a
byte of it is read; one without a length (chunked) is counted as it arrives and refused the
moment it passes the limit. Either way the client gets the JSON 413 at once and the rest of
the body is never read (the app sees the client as gone).

Admission: a request to an inference route takes one of the engine's places as soon as its
headers arrive and keeps it until its response is sent; with none free it gets a JSON 503
with Retry-After at once, before its body is read or parsed. Bounding the engine's queue
alone is not enough: under a flood, reading, parsing and decoding the uploads would starve
the model and every request would slow down together.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, ServiceError


class BodySizeLimit:
    def __init__(self, app: ASGIApp, default_limit: int, limits_by_path: dict[str, int]):
        self.app = app
        self.default_limit = default_limit
        self.limits_by_path = limits_by_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits_by_path.get(scope["path"], self.default_limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, f"the body is {declared} bytes; the limit is {limit}")
            return

        received = 0
        refused = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not response_started:
                        await _refuse(send, f"the body is over the limit of {limit} bytes")
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # whatever the app answers to a body cut off mid-way, 413 went first
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise


class Admission:
    def __init__(self, app: ASGIApp, paths: set[str]):
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = scope["app"].state.engine if scope["type"] == "http" else None
        if engine is None or scope["path"] not in self.paths:
            # Not an inference route, or no engine yet (the route then answers not_ready).
            await self.app(scope, receive, send)
            return
        try:
            place = engine.admit()
            place.__enter__()
        except ServiceError as error:
            # Read the body (bytes only, no parsing; BodySizeLimit bounds it) before answering:
            # a server that closes on unread bytes makes the client's kernel reset the
            # connection, and the client may never see the 503 and its Retry-After.
            await _drain(receive)
            await _send_error(send, error, close=False)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            place.__exit__(None, None, None)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _refuse(send: Send, message: str) -> None:
    await _send_error(send, PayloadTooLarge(message), close=True)


async def _send_error(send: Send, error: ServiceError, close: bool) -> None:
    """The JSON error response. `close` when the body is left unread: the connection cannot
    carry another request after it."""
    body = json.dumps(error.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *([(b"connection", b"close")] if close else []),
        *((name.lower().encode(), value.encode()) for name, value in error.headers.items()),
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
