"""A loopback server with one event stream whose `Listener` a test drives by hand."""

from __future__ import annotations

from aiohttp import web

from research_service.settings import Settings
from research_service.stats import Stats
from research_service.web.listener import Listener
from tests.loopback import LoopbackServer


class ListenerServer(LoopbackServer):
    """Serves `GET /events`: a stream with its `retry` field written, then `feed(listener)`
    hands its listener events as a run's hub would; the stream ends when `feed` returns."""

    def __init__(self) -> None:
        super().__init__()
        self.stats = Stats()

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
        listener = Listener(request, response, Settings(), self.stats)
        assert await listener.write(b"retry: 3000\n\n")
        await self.feed(listener)
        await listener.close()
        return response
