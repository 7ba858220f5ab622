"""A failure after an answer's head went out closes the connection: it never writes a second
answer (a 503 problem) into the body of a stream or a download, as it once did when the run
store failed while an event stream was catching up (found by a chaos campaign on a cluster,
PostgreSQL stalled under an API node's read)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from research_service.errors import StoreUnavailable
from research_service.web.problems import problem_middleware
from tests.loopback import LoopbackServer

HEAD_BYTES = b"retry: 3000\n\n"


class FailingStreams(LoopbackServer):
    """`/stream` sends its head and a first chunk, then its store read fails; `/broken` fails
    the same way with an error nobody expected; `/ok` answers plainly."""

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[problem_middleware])
        app.router.add_get("/stream", self._stream)
        app.router.add_get("/broken", self._broken)
        app.router.add_get("/ok", self._ok)
        return app

    async def _begin(self, request: web.Request) -> None:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(HEAD_BYTES)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        await self._begin(request)
        raise StoreUnavailable("the run store cannot be read: connection timed out")

    async def _broken(self, request: web.Request) -> web.StreamResponse:
        await self._begin(request)
        raise RuntimeError("a bug")

    async def _ok(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="fine")


@pytest.fixture
async def server() -> AsyncIterator[FailingStreams]:
    async with FailingStreams() as running:
        yield running


async def raw_get(server: FailingStreams, path: str) -> bytes:
    """Everything the server sends for one GET, until it closes the connection."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n\r\n".encode()
    )
    async with asyncio.timeout(10):
        received = await reader.read(-1)  # to EOF: the server must close it
    writer.close()
    return received


@pytest.mark.parametrize("path", ["/stream", "/broken"])
async def test_a_failure_after_the_head_closes_the_connection_without_a_second_answer(
    server: FailingStreams, path: str
) -> None:
    received = await raw_get(server, path)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"HTTP/1.1" not in body  # no second status line, no problem+json in the stream
    assert HEAD_BYTES in body
    # The chunked body has no last chunk: the client sees it cut short, not complete.
    assert not body.endswith(b"0\r\n\r\n")
    # And the server goes on serving.
    assert (await raw_get(server, "/ok")).endswith(b"\r\n\r\nfine")
