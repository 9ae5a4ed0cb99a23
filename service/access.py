"""Who may use /v1, decided from the request's headers before any of its body is read.

AccessGuard (pure ASGI) stands in front of every /v1 route, HTTP and WebSocket alike:

- the API key (when the service has one): `X-API-Key`, or for the WebSocket also the
  `api_key` query parameter (browsers cannot set headers on one). A request without the
  right key gets a JSON 401 and its connection closes with the body unread, so an
  unauthenticated client cannot make the service read, spool or parse an upload, nor hold
  anything while it dawdles. (`early_key_check=False` leaves the key to the routes' own
  check, after the upload, as before.)
- the WebSocket's origin: browsers let any page open a WebSocket anywhere, with the user's
  network position and cookies, so the handshake's `Origin` gets the CORS rule: the
  service's own origin, those in `cors_origins` ("*" for any), and clients that send no
  Origin at all (not browsers). Others are refused with a JSON 403 `forbidden`.

A WebSocket handshake is refused as an HTTP request is, with the JSON 401 or 403, through
ASGI's denial-response extension (uvicorn has it); on a server without it, with close code 1008
and the reason, which the server shows a client as a bare 403.

A key given in the query would be written to the server's log with the URL (uvicorn logs every
WebSocket handshake and HTTP request with its query string), so `hide_keys_in_server_logs`
blanks it there.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.deps import API_KEY_HEADER, api_key_matches
from service.errors import POLICY_VIOLATION, Forbidden, Unauthorized, refuse_handshake
from service.limits import send_error
from service.settings import Settings

GUARDED_PREFIX = "/v1"
# uvicorn's loggers that write a request's path with its query string: HTTP requests, and
# WebSocket handshakes ('"WebSocket /v1/stream?api_key=..." [accepted]').
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")
_KEY_IN_QUERY = re.compile(r"(?<![\w%])(api_key=)[^&\s\"]*")


def origin_allowed(origin: str, host: str | None, allowed: list[str]) -> bool:
    """The CORS rule for a WebSocket handshake from `origin` to the service at `host`."""
    if "*" in allowed or origin in allowed:
        return True
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


class AccessGuard:
    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        path = scope.get("path", "")
        guarded = path == GUARDED_PREFIX or path.startswith(GUARDED_PREFIX + "/")
        if kind not in ("http", "websocket") or not guarded:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        provided = headers.get(API_KEY_HEADER)
        if kind == "websocket":
            origin = headers.get("origin")
            if origin is not None and not origin_allowed(
                origin, headers.get("host"), self.settings.cors_origins
            ):
                refusal = Forbidden(
                    f"origin {origin} may not open this WebSocket: only the service's own "
                    "origin and its CORS origins may"
                )
                await refuse_handshake(scope, send, refusal, POLICY_VIOLATION)
                return
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            provided = provided or (query.get("api_key") or [None])[0]
        if self.settings.early_key_check and not api_key_matches(provided, self.settings):
            if kind == "websocket":
                refusal = Unauthorized(
                    f"missing or wrong {API_KEY_HEADER} header (or api_key query parameter)"
                )
                await refuse_handshake(scope, send, refusal, POLICY_VIOLATION)
            else:
                await send_error(send, Unauthorized(f"missing or wrong {API_KEY_HEADER} header"))
            return
        await self.app(scope, receive, send)


class QueryKeyRedaction(logging.Filter):
    """Writes `api_key=***` for the key's value in a log record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _KEY_IN_QUERY.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _KEY_IN_QUERY.sub(r"\1***", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def hide_keys_in_server_logs() -> None:
    """Install QueryKeyRedaction on uvicorn's loggers (once, however often it is called)."""
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryKeyRedaction) for f in logger.filters):
            logger.addFilter(QueryKeyRedaction())
