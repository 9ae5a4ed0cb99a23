"""The HTTP server's own guard, below the ASGI app: a deadline for each request's head.

uvicorn reads a request's head (request line and headers) without a deadline: a client that
connects and sends nothing, or half a header, holds its socket, and a file descriptor, for
ever (the soak test held 30 for minutes), and enough of them stop the server accepting any
connection. `HeadersInTime` is uvicorn's httptools protocol with that deadline: from the
connection's start, and from the end of each response, a client has the server's
`timeout_keep_alive` seconds to send a whole head, else the connection closes. The body's
pace is BodyLimits' (service/limits.py); a WebSocket's silence is its pings'.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options that the settings decide (`greedysign serve` and the tests' live
    servers pass the same)."""
    return {
        # WebSocket frames may be as large as an upload; uvicorn's default cap is 16 MiB.
        "ws_max_size": settings.max_upload_bytes + 4096,
        "http": HeadersInTime,
        "timeout_keep_alive": settings.header_timeout_s,
    }


class HeadersInTime(HttpToolsProtocol):
    """uvicorn's httptools protocol (`uvicorn.run(..., http=HeadersInTime)`), with a deadline
    for each request's head."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn arms its keep-alive timer when no pipelined request waits: the connection
        # is idle, and the next head is due.
        if self.timeout_keep_alive_task is not None:
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.timeout_keep_alive, self._head_late)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
