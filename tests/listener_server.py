"""A loopback server with one event stream whose `Listener` a test drives by hand."""

from __future__ import annotations

import asyncio

from aiohttp import web

from research_service.settings import Settings
from research_service.stats import Stats
from research_service.web.listener import Listener
from tests.loopback import LoopbackServer


class ListenerServer(LoopbackServer):
    """Serves `GET /events`: a stream with its `retry` field written, then `feed(listener)`
    hands its listener events as a run's hub would; the stream ends when `feed` returns
    (`closed` is set once its listener has ended the response)."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        self.settings = Settings() if settings is None else settings
        self.stats = Stats()
        self.closed = asyncio.Event()

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/events", self._events)
        return app

    async def feed(self, listener: Listener) -> None:
        """Hand `listener` its events."""
        raise NotImplementedError

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        listener = Listener(request, response, self.settings, self.stats)
        assert await listener.write(b"retry: 3000\n\n")
        await self.feed(listener)
        await listener.close()
        self.closed.set()
        return response
