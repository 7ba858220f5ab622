"""The HTTP connection protocol: aiohttp's, with the connection cap and short protocol errors."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from research_service.events import dumps
from research_service.problem_json import PROBLEM_TYPE_BASE
from research_service.web.access_log import LOGGED_ALREADY
from research_service.web.connections import (
    ConnectionGuard,
    reset,
    unacknowledged_for_at_most,
)
from research_service.web.problems import problem
from research_service.web.request_id import REQUEST_ID_HEADER, request_id_of
from research_service.web.validation import unreadable_body

log = logging.getLogger(__name__)

#: What every response says in `Server`: the service, never its software versions.
SERVER_NAME: Final = "research-service"

#: How a too-long request line or URL starts (a header starts with its name and a colon).
_REQUEST_LINE: Final = re.compile(r"^(/|[A-Za-z][A-Za-z0-9+.-]*://|[A-Z]+ )")

#: Written to a connection refused at the cap, before it is closed.
_REFUSED_BODY: Final = dumps(
    {
        "type": PROBLEM_TYPE_BASE + "too-many-connections",
        "title": "Too many connections",
        "status": 503,
        "detail": "the service is serving as many connections as it may; retry shortly",
    }
).encode()
REFUSED_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Server: " + SERVER_NAME.encode() + b"\r\n"
    b"Content-Type: application/problem+json\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Cache-Control: no-store\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY
)


def protocol_problem(exc: BaseException | None) -> tuple[int, str, str, str]:
    """Status, slug, title and a fixed detail for a request aiohttp could not parse.

    The detail never quotes the request: parser messages echo the offending bytes.
    """
    if isinstance(exc, LineTooLong) and _REQUEST_LINE.match(_text(exc.args[0])):
        return 414, "uri-too-long", "URI too long", "the URL is longer than the 8190-byte limit"
    if isinstance(exc, LineTooLong):
        return (
            431,
            "request-too-large",
            "Header too large",
            "a header is longer than the 8190-byte limit",
        )
    message = str(exc) if exc is not None else ""
    if "Too many headers" in message:
        return 431, "request-too-large", "Too many headers", "the request has over 128 headers"
    if isinstance(exc, BadHttpMethod):
        return 400, "malformed-request", "Malformed request", "the request method is not valid"
    return 400, "malformed-request", "Malformed request", "the request is not valid HTTP/1.1"


def _text(line: object) -> str:
    """The start of the line a parser error quotes, as text."""
    if isinstance(line, bytes | bytearray):
        return bytes(line[:100]).decode("latin-1")
    return str(line)


class GuardedRequestHandler(RequestHandler):
    """One HTTP connection: admitted by the guard, with protocol errors as short problems.

    A peer that stops reading is reset once its answer has been stuck (asyncio paused the
    writes) for `stall_timeout_s`: otherwise the answer, its buffered bytes and the connection's
    slot under the cap are held for as long as the peer likes (aiohttp has no write timeout).
    """

    # One per open connection: no instance dict (issue 16's 16 KiB per idle listener).
    __slots__ = ("_refused", "_stalled", "guard", "stall_timeout_s")

    def __init__(
        self,
        manager: web.Server,
        *,
        guard: ConnectionGuard,
        stall_timeout_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.stall_timeout_s = stall_timeout_s
        self._refused = False
        self._stalled: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        """The peer takes no more for now: reset it if it still takes none after the timeout."""
        super().pause_writing()
        if self.stall_timeout_s is not None and self._stalled is None:
            self._stalled = self._loop.call_later(self.stall_timeout_s, self._reset_stalled)

    def resume_writing(self) -> None:
        """The peer reads again."""
        super().resume_writing()
        self._cancel_stall()

    def _cancel_stall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _reset_stalled(self) -> None:
        self._stalled = None
        log.info(
            "reset a connection whose client took none of its answer for %g s",
            self.stall_timeout_s,
        )
        reset(self.transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Take the connection if the guard admits it; else answer 503 and close it."""
        if not self.guard.admit(self):
            assert isinstance(transport, asyncio.Transport)
            self._refused = True
            self.guard.refuse(transport, REFUSED_RESPONSE)
            return
        if self.stall_timeout_s is not None:
            # Past this without an acknowledgement the kernel drops the connection itself: a
            # keep-alive connection closed with an answer its client never reads (at its
            # timeout, or to make room) would otherwise stay in FIN_WAIT1, answer and all.
            # A client that reads, however slowly, acknowledges, and gets all of it.
            unacknowledged_for_at_most(transport, self.stall_timeout_s)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """Parse requests (a refused connection's are discarded unread)."""
        if not self._refused:
            super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Release the connection's slot."""
        if self._refused:
            return
        self._cancel_stall()
        self.guard.left(self)
        super().connection_lost(exc)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """Log a failure of the connection's loop: a body aiohttp could not read is the client's.

        After a handler answered, aiohttp reads what is left of the request body before it
        takes the next request; a body that cannot be decoded (its Content-Encoding) fails
        there, as it did in the handler that answered it `400`. Not an error of the service.
        """
        exc = kw.get("exc_info")
        if isinstance(exc, RequestPayloadError):
            log.info(
                "closed a connection whose request body cannot be read: %s", unreadable_body(exc)
            )
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A short problem+json answer to a request that failed outside the app's handlers."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response was partly sent; the connection is closed")
        if status >= 500:
            # Not the client's doing: a bug, logged with its traceback.
            log.error("request failed outside the handlers", exc_info=exc)
            slug, title, detail = "internal", "Internal server error", "the error was logged"
        else:
            status, slug, title, detail = protocol_problem(exc)
            if not isinstance(exc, BadHttpMessage | None):
                status, slug, title = 400, "malformed-request", "Malformed request"
            log.info("refused a malformed request from %s: %s", request.remote, detail)
        request[LOGGED_ALREADY] = True  # once, with the reason
        # As common_headers says them of every other answer (these never reach it).
        headers = {
            "Server": SERVER_NAME,
            REQUEST_ID_HEADER: request_id_of(request),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-store",
        }
        response = problem(status, slug=slug, title=title, detail=detail, headers=headers)
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making GuardedRequestHandler connections."""

    def __init__(
        self,
        handler: Any,
        *,
        guard: ConnectionGuard,
        stall_timeout_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard
        self.stall_timeout_s = stall_timeout_s

    def __call__(self) -> GuardedRequestHandler:
        """A protocol instance for one new connection."""
        return GuardedRequestHandler(
            self,
            guard=self.guard,
            stall_timeout_s=self.stall_timeout_s,
            loop=self._loop,
            **self._kwargs,
        )


@web.middleware
async def connection_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mark the connection busy while a request is handled, so the guard never closes it."""
    protocol = request.protocol
    if not isinstance(protocol, GuardedRequestHandler):
        return await handler(request)
    protocol.guard.busy(protocol, True)
    try:
        return await handler(request)
    finally:
        protocol.guard.busy(protocol, False)


async def common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: what every answer says of itself.

    `Server` names the service, not aiohttp's and Python's versions. No answer is sniffed for
    another type than it says, and none is kept by a cache unless it says how (the panel's
    files and the OpenAPI document, by ETag): runs, listings and sessions are one owner's.
    """
    response.headers["Server"] = SERVER_NAME
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-store")
