"""The hub's direct writes (`DirectWriter` in web/listener.py) against aiohttp's own framing.

`DirectWriter` writes live events to the socket behind aiohttp's back. These tests put its bytes
on a real socket beside aiohttp's for the same payloads, and check, in the installed aiohttp,
each thing it relies on: an aiohttp upgrade that changes one fails here, by name. It also pins
the one thing `Listener.write` relies on to skip a write's deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import aiohttp
import pytest
from aiohttp import hdrs, web

from research_service.web.listener import MAX_WRITE_BYTES, DirectWriter
from research_service.web.stream import STREAM_HEADERS
from tests.loopback import HOST, LoopbackServer

#: The first goes through aiohttp, as the retry field does: it also sends the headers.
PAYLOADS: Final = (
    b"retry: 3000\n\n",
    b"x",
    b"f" * 15,  # one hex digit of size, then two
    b"g" * 16,
    b'data: {"a":1}\r\n0\r\n\r\n',  # the framing's own bytes inside a payload
    bytes(range(256)),
    b"h" * 0x10000,  # past aiohttp's drain limit and its writelines threshold
    b"i" * MAX_WRITE_BYTES,  # the largest write the listener makes
    b"id: 1\nevent: done\ndata: {}\n\n",
)
#: Which payloads the direct route hands to aiohttp instead, so the two kinds of write
#: interleave: bytes either side held back would come out of order.
THROUGH_AIOHTTP: Final = frozenset({0, 3, 6})
VERSIONS: Final = ("1.1", "1.0")
#: `StreamWriter.write` drains once its count of bytes since the last drain passes this.
AIOHTTP_DRAIN_LIMIT: Final = 0x10000


def upgraded(what: str) -> str:
    """The failure message: what changed, in which aiohttp, and what it breaks."""
    return (
        f"aiohttp {aiohttp.__version__}: {what}; the hub's direct writes "
        "(DirectWriter in research_service/web/listener.py) rely on it"
    )


class FramingServer(LoopbackServer):
    """Streams PAYLOADS through aiohttp alone, or through aiohttp and DirectWriter in turn."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, Any] = {}

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/aiohttp", self._aiohttp)
        app.router.add_get("/direct", self._direct)
        app.router.add_get("/observe", self._observe)
        return app

    async def _aiohttp(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=STREAM_HEADERS)
        await response.prepare(request)
        for payload in PAYLOADS:
            await response.write(payload)
        await response.write_eof()
        return response

    async def _direct(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=STREAM_HEADERS)
        await response.prepare(request)
        direct = DirectWriter(request, response)
        for n, payload in enumerate(PAYLOADS):
            if n in THROUGH_AIOHTTP:
                await response.write(payload)
            else:
                assert direct.send(payload)
        await response.write_eof()
        return response

    async def _observe(self, request: web.Request) -> web.StreamResponse:
        """Record, at each step of a stream, what DirectWriter reads of aiohttp's state."""
        response = web.StreamResponse(status=200, headers=STREAM_HEADERS)
        await response.prepare(request)
        writer = request.writer
        seen = self.seen
        seen["writer"] = getattr(response, "_payload_writer", None) is writer
        seen["transport"] = request.transport is not None and writer.transport is request.transport
        seen["chunked"] = getattr(writer, "chunked", None)
        seen["header"] = response.headers.get(hdrs.TRANSFER_ENCODING)
        seen["compressed"] = response.compression or hdrs.CONTENT_ENCODING in response.headers
        await response.write(PAYLOADS[0])
        seen["headers_written"] = getattr(writer, "_headers_written", None)
        seen["headers_buffered"] = getattr(writer, "_headers_buf", "missing")
        seen["direct_chunked"] = DirectWriter(request, response).chunked
        seen["completes"] = await completes_at_once(request, response)
        await response.write_eof()
        return response


async def completes_at_once(request: web.Request, response: web.StreamResponse) -> bool | str:
    """Whether a write of half the high-water mark to an empty buffer returns unsuspended, as
    `Listener.cannot_wait` relies on (it writes such data with no deadline), on the write
    where aiohttp drains (its count of bytes since its last drain passes its limit)."""
    transport = request.transport
    writer = request.writer
    assert transport is not None
    # Bring aiohttp's count up to just under its limit (chunk framing counts too).
    await response.write(b"p" * (AIOHTTP_DRAIN_LIMIT - writer.buffer_size - 64))
    if transport.get_write_buffer_size():
        return "the buffer was not empty"
    coro = response.write(b"w" * (transport.get_write_buffer_limits()[1] // 2))
    try:
        coro.send(None)
    except StopIteration:
        return True if writer.buffer_size == 0 else "aiohttp did not drain on this write"
    coro.close()
    return False


@pytest.fixture
async def server() -> AsyncIterator[FramingServer]:
    async with FramingServer() as framing:
        yield framing


async def exchange(port: int, path: str, *, version: str) -> tuple[list[bytes], bytes]:
    """GET `path` over a raw socket: the response's header lines (Date left out) and its body."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        f"GET {path} HTTP/{version}\r\nHost: {HOST}:{port}\r\n"
        "Accept-Encoding: gzip, deflate\r\nConnection: close\r\n\r\n".encode()
    )
    try:
        async with asyncio.timeout(10):
            raw = await reader.read()  # to EOF: the server closes after the response
    finally:
        writer.close()
        await writer.wait_closed()
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, raw[:200]
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return lines, body


def dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body, read strictly (RFC 9112 section 7.1)."""
    payload = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", "a chunked body ends with 0 CRLF CRLF"
            return bytes(payload)
        payload += body[:size]
        assert body[size : size + 2] == b"\r\n", "each chunk ends with CRLF"
        body = body[size + 2 :]


@pytest.mark.parametrize("version", VERSIONS)
async def test_direct_writes_are_byte_identical_to_aiohttps_own(
    server: FramingServer, version: str
) -> None:
    own_head, own_body = await exchange(server.port, "/aiohttp", version=version)
    direct_head, direct_body = await exchange(server.port, "/direct", version=version)
    assert direct_head == own_head
    assert direct_body == own_body
    if version == "1.1":
        assert b"Transfer-Encoding: chunked" in own_head
        assert dechunk(own_body) == b"".join(PAYLOADS)
    else:
        assert not any(line.startswith(b"Transfer-Encoding") for line in own_head)
        assert own_body == b"".join(PAYLOADS)


@pytest.mark.parametrize("version", VERSIONS)
async def test_aiohttp_still_works_the_way_direct_writer_relies_on(
    server: FramingServer, version: str
) -> None:
    await exchange(server.port, "/observe", version=version)
    seen = server.seen
    chunked = version == "1.1"
    assert seen["writer"], upgraded("a prepared response no longer writes through request.writer")
    assert seen["transport"], upgraded("request.writer no longer writes to request.transport")
    assert seen["chunked"] is chunked, upgraded(
        f"the writer's chunked flag is {seen['chunked']!r} for HTTP/{version}"
    )
    assert (seen["header"] == "chunked") is chunked, upgraded(
        f"Transfer-Encoding is {seen['header']!r} for HTTP/{version}, while the writer's "
        f"chunked flag is {seen['chunked']!r}"
    )
    assert seen["direct_chunked"] is chunked, "DirectWriter no longer tells chunked from plain"
    assert not seen["compressed"], upgraded("a stream response is compressed unasked")
    assert seen["headers_written"] is True, upgraded(
        "the headers are not marked written after the first body write"
    )
    assert seen["headers_buffered"] is None, upgraded(
        "the writer still holds headers after the first body write"
    )
    assert seen["completes"] is True, (
        f"aiohttp {aiohttp.__version__}: a write that fits an empty transport buffer waits "
        f"({seen['completes']}); Listener.write gives such writes no deadline (cannot_wait)"
    )
