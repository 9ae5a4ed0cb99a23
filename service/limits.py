"""What bounds the work one client can make the service do, shared by every route.

BodyLimits (pure ASGI): a body whose Content-Length is over its route's limit is refused
before a byte of it is read; one without a length (chunked) is counted as it arrives and
refused the moment it passes the limit (413). A client that stops sending its body for
`read_timeout_s` gets a 408 (an idle or trickling upload holds nothing for long). Either way
the client gets the JSON error at once, the connection closes, and the rest of the body is
never read (the app sees the client as gone).

Admission (pure ASGI): a request to an inference route takes one of the engine's places
once its body has arrived in full, and keeps it until its response is sent; with none free
it gets a JSON 503 with Retry-After. Places bound the work in flight (decoding, queueing,
inference, encoding): bounding the engine's queue alone would let a flood of uploads starve
the model with decoding. A body still on its way holds no place, so clients that send their
headers and then nothing cannot lock the others out; with every place taken already when
the headers arrive, the request is refused without parsing its body.

Places: a count of holders with a cap, past which one more is refused at once (503), never
queued: the engine's places for requests and for whole frames, and the open streams.

PixelBudget: the pixels (width x height) of the images being decoded and answered at once,
over all requests. Memory follows pixels, not requests: one 25-megapixel image costs what
ten thousand small ones do. A request reserves its image's pixels before decoding and gives
them back when its answer is built; when they do not fit, it waits (waiters are let in
smallest first), and past `timeout_s` it gets a 503. An eighth of the budget is kept for
images no larger than that eighth, so small requests do not queue behind large ones.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTimeout, Overloaded, PayloadTooLarge, ServiceError


class BodyLimits:
    def __init__(
        self,
        app: ASGIApp,
        default_limit: int,
        limits_by_path: dict[str, int],
        read_timeout_s: float,
    ):
        self.app = app
        self.default_limit = default_limit
        self.limits_by_path = limits_by_path
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits_by_path.get(scope["path"], self.default_limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await send_error(
                send, PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
            )
            return

        received = 0
        body_done = False
        refused = False
        response_started = False

        async def refuse(error: ServiceError) -> Message:
            nonlocal refused
            refused = True
            if not response_started:
                await send_error(send, error)
            return {"type": "http.disconnect"}

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if refused:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()  # after the body: only the disconnect is left to wait for
            try:
                async with asyncio.timeout(self.read_timeout_s):
                    message = await receive()
            except TimeoutError:
                return await refuse(
                    BodyTimeout(
                        f"no part of the request body arrived for {self.read_timeout_s:g} s"
                    )
                )
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    return await refuse(
                        PayloadTooLarge(f"the body is over the limit of {limit} bytes")
                    )
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # whatever the app answers to a body cut off mid-way, our error went first
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
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
        if engine.at_capacity:
            # Read the body (bytes only, no parsing; BodyLimits bounds its size and pace)
            # before answering: a server that closes on unread bytes makes the client's kernel
            # reset the connection, and the client may never see the 503 and its Retry-After.
            await _drain(receive)
            await send_error(send, Overloaded(engine.capacity_message), close=False)
            return

        place = None
        refused = False

        async def admitted_receive() -> Message:
            nonlocal place, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            body_done = message["type"] == "http.request" and not message.get("more_body")
            if body_done and place is None:
                try:
                    # The body is in: from here on the request costs work.
                    place = engine.admit()
                    place.__enter__()
                except ServiceError as error:
                    place = None
                    refused = True
                    await send_error(send, error, close=False)
                    return {"type": "http.disconnect"}
            return message

        async def admitted_send(message: Message) -> None:
            if not refused:  # else our 503 went first
                await send(message)

        try:
            await self.app(scope, admitted_receive, admitted_send)
        except Exception:
            if not refused:
                raise
        finally:
            if place is not None:
                place.__exit__(None, None, None)


class Places:
    def __init__(self, capacity: int, what: str):
        """`capacity` holders at once; `what` names them in the refusal ("requests")."""
        if capacity < 1:
            raise ValueError(f"{what}: a capacity of at least 1 is needed, got {capacity}")
        self.capacity = capacity
        self.what = what
        self.taken = 0

    @property
    def full(self) -> bool:
        return self.taken >= self.capacity

    @property
    def message(self) -> str:
        return f"the service is at capacity ({self.capacity} {self.what})"

    @contextmanager
    def hold(self) -> Iterator[None]:
        """One place for the duration of the block; Overloaded at once when none is free."""
        if self.full:
            raise Overloaded(self.message)
        self.taken += 1
        try:
            yield
        finally:
            self.taken -= 1


class PixelBudget:
    def __init__(self, pixels: int, timeout_s: float):
        if pixels < 8 or timeout_s <= 0:
            raise ValueError("a pixel budget needs at least 8 pixels and a positive timeout")
        self.pixels = pixels
        # An eighth is kept for images no larger than it: large images never take it all,
        # so small ones do not queue behind them.
        self.kept_for_small = pixels // 8
        self.timeout_s = timeout_s
        self.in_use = 0
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def largest(self) -> int:
        """The most one reservation can take."""
        return self.pixels - self.kept_for_small

    @asynccontextmanager
    async def reserve(self, pixels: int) -> AsyncIterator[None]:
        """Hold `pixels` for the duration of the block."""
        pixels = self._clamp(pixels)
        await self._acquire(pixels)
        try:
            yield
        finally:
            self.release(pixels)

    def try_acquire(self, pixels: int) -> bool:
        """Take `pixels` now if they fit; the caller must `release` them."""
        pixels = self._clamp(pixels)
        if not self._fits(pixels):
            return False
        self.in_use += pixels
        return True

    async def acquire(self, pixels: int) -> None:
        """Take `pixels`, waiting for them; the caller must `release` them."""
        await self._acquire(self._clamp(pixels))

    def release(self, pixels: int) -> None:
        """Give `pixels` back and let waiters in, smallest first (in arrival order among
        equals)."""
        self.in_use -= self._clamp(pixels)
        waiting = sorted(
            (item for item in self._waiting if not item[1].done()), key=lambda item: item[0]
        )
        for index, (wanted, granted) in enumerate(waiting):
            if not self._fits(wanted):
                self._waiting = waiting[index:]  # the rest are larger: they do not fit either
                return
            self.in_use += wanted
            granted.set_result(None)
        self._waiting = []

    def _clamp(self, pixels: int) -> int:
        return min(max(pixels, 1), self.largest)

    def _fits(self, pixels: int) -> bool:
        limit = self.pixels if pixels <= self.kept_for_small else self.largest
        return self.in_use + pixels <= limit

    async def _acquire(self, pixels: int) -> None:
        if self._fits(pixels):
            self.in_use += pixels
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((pixels, granted))
        try:
            async with asyncio.timeout(self.timeout_s):
                await granted
        except BaseException as error:
            if granted.done() and not granted.cancelled():
                if isinstance(error, TimeoutError):
                    return  # granted just as the time ran out: it is ours
                self.release(pixels)  # granted, but the request is gone
            else:
                granted.cancel()
            if isinstance(error, TimeoutError):
                raise Overloaded(
                    f"the service is busy decoding large images (a budget of {self.pixels} "
                    f"pixels); {pixels} did not come free within {self.timeout_s:g} s"
                ) from None
            raise


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


async def send_error(send: Send, error: ServiceError, close: bool = True) -> None:
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
