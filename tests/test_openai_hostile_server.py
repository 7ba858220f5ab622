"""A model server that is not one: replies without end, and a model list that is HTML.

The real OpenAI SDK, built as `--llm openai` builds it (providers/registry.py), talks HTTP to a
loopback stand-in. A reply that never ends once grew the process by 300 MB/s until the kernel
killed it; a model list of another shape made `serve` stop with a traceback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from research_service.errors import ConfigError
from research_service.providers.base import PlanRequest
from research_service.providers.capped_http import MAX_REPLY_BYTES
from research_service.providers.llm_errors import LLMBadResponse
from research_service.providers.registry import LLM_PROVIDERS
from research_service.settings import Settings
from tests.fakes import RecordingReporter
from tests.loopback import LoopbackServer

MODELS = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}
CHUNK = b"a" * 65536


class NotAModelServer(LoopbackServer):
    """`/v1/models` answers `models` (a body and its type); every completion never ends."""

    def __init__(
        self, models: tuple[bytes, str] | None = (json.dumps(MODELS).encode(), "application/json")
    ) -> None:
        super().__init__()
        self.models = models  # None: a list that never ends either
        self.sent = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.list_models if self.models else self.flood)
        app.router.add_post("/v1/chat/completions", self.flood)
        return app

    async def list_models(self, request: web.Request) -> web.Response:
        assert self.models is not None
        body, content_type = self.models
        return web.Response(body=body, content_type=content_type)

    async def flood(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"choices":[{"index":0,"message":{"role":"assistant","content":"')
        while True:  # until the client goes away
            await response.write(CHUNK)
            self.sent += len(CHUNK)

    async def __aenter__(self) -> NotAModelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def settings(server: NotAModelServer) -> Settings:
    return Settings(
        llm="openai",
        openai_api_key="test",
        openai_base_url=f"http://127.0.0.1:{server.port}/v1",
        llm_max_attempts=1,
    )


@pytest.fixture
async def flooding() -> AsyncIterator[NotAModelServer]:
    async with NotAModelServer() as server:
        yield server


async def test_a_reply_that_never_ends_is_a_bad_response_read_no_further_than_the_cap(
    flooding: NotAModelServer,
) -> None:
    async with LLM_PROVIDERS["openai"](settings(flooding)) as llm:
        request = PlanRequest(question="Why?", breadth=2, report=RecordingReporter())
        async with asyncio.timeout(30):
            with pytest.raises(LLMBadResponse, match="sent a reply that never ended") as caught:
                await llm.plan(request)
    assert "larger than 32 MiB" in str(caught.value)
    # The client stopped reading at the cap; the sockets' buffers held some megabytes more.
    assert flooding.sent < 2 * MAX_REPLY_BYTES


@pytest.mark.parametrize(
    "models",
    [
        (b"<html><body>nginx</body></html>", "text/html"),
        (b'"hello"', "application/json"),
        (b"[]", "application/json"),
        (b'{"data": "x"}', "application/json"),
        (b'{"data": [1, 2]}', "application/json"),
        (bytes(range(128, 256)), "application/json"),
    ],
)
async def test_a_model_list_of_another_shape_is_one_line_saying_so(
    models: tuple[bytes, str],
) -> None:
    async with NotAModelServer(models) as server:
        with pytest.raises(ConfigError) as caught:
            async with LLM_PROVIDERS["openai"](settings(server)):
                pass
    message = str(caught.value)
    assert message.startswith(f"the model server at http://127.0.0.1:{server.port}/v1 ")
    assert "check OPENAI_BASE_URL" in message
    assert "\n" not in message


async def test_a_model_list_that_never_ends_is_refused_at_start() -> None:
    async with NotAModelServer(None) as server:
        with pytest.raises(ConfigError, match="larger than 32 MiB"):
            async with LLM_PROVIDERS["openai"](settings(server)):
                pass
