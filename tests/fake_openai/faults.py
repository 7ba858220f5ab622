"""Faults a scripted reply can carry: error statuses, dropped connections, pauses, bad frames.

Positions count streamed deltas (reasoning and content pieces alike): a fault `after=N`
fires once N deltas have been written, so `after=0` fires before the first chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

# SO_LINGER on, timeout 0: close() sends a TCP RST instead of a FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


@dataclass(kw_only=True, eq=False)
class Pause:
    """Holds the response until `release` is set or `delay` seconds pass (forever if None).

    `reached` is set when the server starts waiting, so a test can act at that moment.
    """

    delay: float | None = None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> None:
        """Set `reached`, then wait for `release` or the delay."""
        self.reached.set()
        if self.delay is None:
            await self.release.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.delay):
                await self.release.wait()


@dataclass(kw_only=True, eq=False)
class SlowResponse(Pause):
    """Pause before the status line: the SDK's `create()` call itself waits."""


@dataclass(kw_only=True, eq=False)
class Stall(Pause):
    """Pause a stream after `after` deltas; `after=0` is a slow first token after the headers."""

    after: int = 0


@dataclass(frozen=True, kw_only=True)
class HTTPError:
    """Answer with an OpenAI-shaped error body and this status instead of a completion."""

    status: int
    message: str | None = None
    code: str | None = None
    retry_after: float | str | None = None  # `Retry-After` header, seconds or an HTTP date
    retry_after_ms: float | None = None  # `retry-after-ms` header
    headers: Mapping[str, str] = field(default_factory=dict)

    def response_headers(self) -> dict[str, str]:
        """The extra response headers, retry hints included."""
        headers = dict(self.headers)
        if self.retry_after is not None:
            headers["Retry-After"] = _number(self.retry_after)
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = _number(self.retry_after_ms)
        return headers


@dataclass(frozen=True, kw_only=True)
class Reset:
    """Drop the connection with a TCP RST before sending a single byte."""


@dataclass(frozen=True, kw_only=True)
class Cut:
    """Close the connection (FIN) after `after` deltas, leaving the chunked body incomplete.

    On a non-streaming request: after the headers and half of the JSON body.
    """

    after: int = 0


@dataclass(frozen=True, kw_only=True)
class Malformed:
    """Write a `data:` line that is not valid JSON after `after` deltas, then carry on.

    On a non-streaming request: a 200 whose body is this text.
    """

    after: int = 0
    data: str = '{"id": "chatcmpl-broken", "choices": [{"delta": {"content": "'


@dataclass(frozen=True, kw_only=True)
class ErrorEvent:
    """Send `data: {"error": {...}}` after `after` deltas and end the stream, as vLLM does."""

    after: int = 0
    message: str = "The server had an error while processing your request."
    type: str = "server_error"
    code: str | None = None


Fault = SlowResponse | Stall | HTTPError | Reset | Cut | Malformed | ErrorEvent
# Faults that only make sense while streaming.
STREAM_ONLY = (Stall, ErrorEvent)


def rate_limited(
    *, retry_after: float | str | None = 1, retry_after_ms: float | None = None
) -> HTTPError:
    """A 429 as OpenAI sends it, with the given retry hints."""
    return HTTPError(
        status=429,
        message="Rate limit reached for requests. Please try again later.",
        code="rate_limit_exceeded",
        retry_after=retry_after,
        retry_after_ms=retry_after_ms,
    )


def reset_connection(request: web.BaseRequest) -> None:
    """Abort the request's connection with an RST, discarding anything unsent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


def close_connection(request: web.BaseRequest) -> None:
    """Close the request's connection after flushing what was written (FIN, no RST)."""
    if request.transport is not None:
        request.transport.close()


def _number(value: float | str) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
