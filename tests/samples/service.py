"""The real service on 127.0.0.1 for a scenario, and raw HTTP exchanges with it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp.test_utils import TestServer

from research_service.app import create_app
from research_service.settings import Settings

#: The builtin model's pause between words, as `serve` has it: answers stream visibly.
TOKEN_DELAY_MS: Final = 15.0
#: Long enough that a cancel sent after a token lands before the next one.
SLOW_TOKEN_DELAY_MS: Final = 250.0
#: Every stream of a scenario ends within this (a few seconds at most).
STREAM_TIMEOUT_S: Final = 60.0


@dataclass
class Env:
    """What every scenario shares: the data folder (the stdlib index is built once into it)."""

    data_dir: Path
    http: aiohttp.ClientSession

    def settings(self, **overrides: Any) -> Settings:
        """The embedded defaults, runs in memory, queries one at a time (so in plan order)."""
        base: dict[str, Any] = {
            "data_dir": self.data_dir,
            "store": "memory",
            "search_concurrency": 1,
            "token_delay_ms": TOKEN_DELAY_MS,
        }
        return Settings(**(base | overrides))


@dataclass
class Answer:
    """An HTTP answer as text."""

    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        import json

        return json.loads(self.text)


@dataclass
class Service:
    """One running service and the session that talks to it."""

    server: TestServer
    http: aiohttp.ClientSession
    seen: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        async with self.http.request(
            method, self.url(path), json=json, headers=headers
        ) as response:
            return Answer(response.status, response.headers, await response.text())

    async def stream(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        when: Callable[[str], bool] | None = None,
        then: Callable[[], Awaitable[object]] | None = None,
    ) -> Answer:
        """Read a stream to its end; once `when(text so far)` holds, await `then()`."""
        text = ""
        async with self.http.get(
            self.url(path),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=STREAM_TIMEOUT_S),
        ) as response:
            async for chunk in response.content.iter_any():
                text += chunk.decode()
                if when is not None and then is not None and when(text):
                    await then()
                    when = None
            return Answer(response.status, response.headers, text)


@asynccontextmanager
async def serving(env: Env, settings: Settings, **given: Any) -> AsyncIterator[Service]:
    """The service's app on a free loopback port (`given`: providers handed to create_app)."""
    server = TestServer(create_app(settings, **given), host="127.0.0.1")
    await server.start_server()
    try:
        yield Service(server, env.http)
    finally:
        await server.close()
