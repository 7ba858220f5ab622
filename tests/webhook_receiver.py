"""A webhook receiver on loopback: records every POST, answers 500 while told to fail."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.loopback import LoopbackServer


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def verify(self, secret: str) -> dict[str, Any]:
        """The payload, if the signature verifies with `secret` (the package's own check)."""
        data: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return data


class Receiver(LoopbackServer):
    """Answers the first `failures` POSTs with 500 (every one while it is -1), then 204;
    while `hang` is set, holds every POST unanswered (until the sender gives up, or close)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []
        #: How many POSTs to answer 500 before answering 204; -1: every one.
        self.failures = 0
        self.hang = False
        #: POSTs held unanswered now, and the most at once.
        self.holding = self.most_held = 0
        self._let_go = asyncio.Event()
        self._arrived = asyncio.Condition()

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._take)
        return app

    async def _take(self, request: web.Request) -> web.Response:
        received = Received(dict(request.headers), await request.read())
        async with self._arrived:
            self.received.append(received)
            self._arrived.notify_all()
        if self.hang:
            self.holding += 1
            self.most_held = max(self.most_held, self.holding)
            try:
                await self._let_go.wait()
            finally:
                self.holding -= 1
            return web.Response(status=503, text="closing")
        if self.failures:
            self.failures -= 1 if self.failures > 0 else 0
            return web.Response(status=500, text="not now")
        return web.Response(status=204)

    async def close(self) -> None:
        """Answer the held POSTs, then stop."""
        self._let_go.set()
        await super().close()

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until `count` POSTs have arrived; all of them so far."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)
