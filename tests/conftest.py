"""Shared fixtures: a real service on a loopback TCP port, scripted providers, an HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from research_service.app import create_app
from research_service.runs.manager import RunManager
from research_service.runs.memory_log import MemoryEventLog
from research_service.settings import Settings
from research_service.web.keys import MANAGER, SETTINGS
from research_service.web.serving import make_runner
from tests.fakes import ScriptedLLM, ScriptedSearch


class ServiceTestServer(TestServer):
    """aiohttp's TestServer on the service's own runner: guarded connections, bounded shutdown."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return make_runner(self.app, self.app[SETTINGS], **kwargs)


@dataclass
class Service:
    """A research-service app served on 127.0.0.1 by aiohttp's TestServer."""

    server: TestServer
    app: web.Application
    llm: ScriptedLLM
    search: ScriptedSearch

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    @property
    def manager(self) -> RunManager:
        return self.app[MANAGER]

    async def create(
        self, client: httpx.AsyncClient, question: str = "What is up?", **opts: Any
    ) -> str:
        body: dict[str, Any] = {"question": question}
        if opts:
            body["options"] = opts
        response = await client.post(self.url("/v1/runs"), json=body)
        assert response.status_code == 201, response.text
        run_id: str = response.json()["id"]
        return run_id

    async def until_held(self, timeout: float = 5.0) -> None:
        """Wait until the scripted model is holding mid-answer (see ScriptedLLM.hold_after)."""
        async with asyncio.timeout(timeout):
            await self.llm.holding.wait()

    async def wait_done(self, run_id: str, timeout: float = 10.0) -> None:
        """Wait on the event log until the run's `done` has been appended."""
        log = self.manager.log
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                events = await log.read(run_id, after=seen)
                if events and events[-1].is_final:
                    return
                seen += len(events)
                await log.wait(run_id, after=seen, timeout=timeout)


MakeService = Callable[..., Awaitable[Service]]


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def search() -> ScriptedSearch:
    return ScriptedSearch()


@contextlib.asynccontextmanager
async def service_factory(
    tmp_path: Path, llm: ScriptedLLM, search: ScriptedSearch
) -> AsyncIterator[MakeService]:
    """Start services on demand (`make(**settings)`); close them all on exit."""
    servers: list[TestServer] = []

    async def make(**overrides: Any) -> Service:
        settings = Settings(data_dir=tmp_path / "data", **{"store": "memory", **overrides})
        # store="sqlite": the app opens its real run store file under tmp_path.
        event_log = MemoryEventLog() if settings.store == "memory" else None
        app = create_app(settings, llm=llm, search=search, event_log=event_log)
        server = ServiceTestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Service(server, app, llm, search)

    try:
        yield make
    finally:
        for server in servers:
            await server.close()


@pytest.fixture
async def make_service(
    tmp_path: Path, llm: ScriptedLLM, search: ScriptedSearch
) -> AsyncIterator[MakeService]:
    async with service_factory(tmp_path, llm, search) as make:
        yield make


@pytest.fixture
async def service(make_service: MakeService) -> Service:
    return await make_service()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http
