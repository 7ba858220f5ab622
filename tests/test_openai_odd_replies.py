"""Model servers that answer, but oddly: bytes that are not UTF-8, stops that are not answers,
limits ignored, replies trickled, secrets quoted back.

The real OpenAI SDK, built as `--llm openai` builds it (providers/registry.py), talks HTTP to a
loopback server that sends exactly the bytes each test gives it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from aiohttp import web

from research_service.errors import ConfigError
from research_service.logs import hide_url_passwords
from research_service.providers.base import AnswerRequest, PlanRequest, Source, Usage
from research_service.providers.llm_errors import (
    LLMAuthError,
    LLMBadResponse,
    LLMConnectError,
    LLMStreamBroken,
    LLMTimeout,
)
from research_service.providers.registry import LLM_PROVIDERS
from research_service.settings import Settings
from tests.fakes import RecordingReporter
from tests.loopback import LoopbackServer

KEY = "sk-the-operators-own-key-0123456789"
MODELS = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}
SOURCES = (Source(id=1, title="json", url="file:///json.md", snippet="Use json.loads."),)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    body = {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def text(content: str) -> bytes:
    return chunk({"content": content})


class OddServer(LoopbackServer):
    """Answers the model list, then each completion with the bytes the test set.

    `stream`: the lines of an answer stream (an iterator may be endless); `plan`: a planning
    reply's body; `status`: an error status with `plan` as its body; `trickle_s`: a planning
    reply sent a space at a time, this far apart, before its body.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stream: Any = []
        self.plan = b""
        self.status = 200
        self.trickle_s = 0.0
        self.stream_closed = asyncio.Event()

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.complete)
        return app

    async def models(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return web.Response(status=self.status, body=self.plan, content_type="application/json")
        return web.json_response(MODELS)

    async def complete(self, request: web.Request) -> web.StreamResponse:
        asked = await request.json()
        if self.status != 200:
            return web.Response(status=self.status, body=self.plan, content_type="application/json")
        if not asked.get("stream"):
            if not self.trickle_s:
                return web.Response(body=self.plan, content_type="application/json")
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            for _ in range(100):
                await response.write(b" ")
                await asyncio.sleep(self.trickle_s)  # the server's pace, not a test's wait
            await response.write(self.plan)
            return response
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for line in self.stream:
                await response.write(line)
        finally:
            self.stream_closed.set()
        return response


def plan_reply(content: bytes) -> bytes:
    message = b'{"role":"assistant","content":"' + content + b'"}'
    return (
        b'{"id":"p","object":"chat.completion","model":"m","choices":[{"index":0,"message":'
        + message
        + b',"finish_reason":"stop"}]}'
    )


@pytest.fixture
async def server() -> AsyncIterator[OddServer]:
    odd = OddServer()
    await odd.start()
    try:
        yield odd
    finally:
        await odd.close()


def settings(server: OddServer, *, userinfo: str = "", **extra: Any) -> Settings:
    return Settings(
        llm="openai",
        openai_api_key=KEY,
        openai_base_url=f"http://{userinfo}127.0.0.1:{server.port}/v1",
        llm_max_attempts=1,
        **extra,
    )


async def answer(server: OddServer, *, max_tokens: int | None = None, **extra: Any) -> str:
    """The answer's text, streamed through the real provider."""
    async with LLM_PROVIDERS["openai"](settings(server, **extra)) as llm:
        request = AnswerRequest(
            question="How?", sources=SOURCES, report=RecordingReporter(), max_tokens=max_tokens
        )
        async with asyncio.timeout(20):
            return "".join([piece async for piece in llm.synthesize(request)])


async def answer_and_usage(server: OddServer, *, max_tokens: int) -> tuple[str, Usage, bool]:
    """The answer streamed, and the one usage the provider reported (estimated or not)."""
    async with LLM_PROVIDERS["openai"](settings(server)) as llm:
        report = RecordingReporter()
        request = AnswerRequest(
            question="How?", sources=SOURCES, report=report, max_tokens=max_tokens
        )
        answer = "".join([p async for p in llm.synthesize(request)])
    ((usage, estimated),) = report.usages
    return answer, usage, estimated


async def test_bytes_that_are_not_utf8_before_the_answer_are_a_bad_response(
    server: OddServer,
) -> None:
    server.stream = [text("caf").replace(b"caf", b"caf\xc3"), chunk(finish="stop")]
    with pytest.raises(LLMBadResponse, match="not valid UTF-8") as caught:
        await answer(server)
    assert "\\xc3" not in str(caught.value)  # a byte named, not the reply quoted


async def test_bytes_that_are_not_utf8_after_text_break_the_stream(server: OddServer) -> None:
    server.stream = [text("Use json"), b"data: {\xff}\n\n", chunk(finish="stop")]
    with pytest.raises(LLMStreamBroken, match=r"broke after 8 characters \(malformed response\)"):
        await answer(server)


async def test_a_plan_reply_that_is_not_utf8_is_a_bad_response(server: OddServer) -> None:
    server.plan = plan_reply(b'[\\"json \xff\xfe\\"]')
    async with LLM_PROVIDERS["openai"](settings(server)) as llm:
        with pytest.raises(LLMBadResponse, match="not valid UTF-8"):
            await llm.plan(PlanRequest(question="Why?", breadth=2, report=RecordingReporter()))


async def test_a_password_in_the_base_url_and_a_key_quoted_back_are_never_shown(
    server: OddServer,
) -> None:
    server.status = 401
    server.plan = json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}."}}).encode()
    with pytest.raises(ConfigError) as at_start:
        async with LLM_PROVIDERS["openai"](settings(server, userinfo="gate:hunter2@")):
            pass
    message = str(at_start.value)
    assert f"the model server at http://127.0.0.1:{server.port}/v1 rejected" in message
    assert "Incorrect API key provided: ***." in message
    for secret in (KEY, "hunter2", "gate"):
        assert secret not in message
    server.status = 200
    async with LLM_PROVIDERS["openai"](settings(server, userinfo="gate:hunter2@")) as llm:
        server.status = 401
        with pytest.raises(LLMAuthError) as in_a_run:
            await llm.plan(PlanRequest(question="Why?", breadth=2, report=RecordingReporter()))
    for secret in (KEY, "hunter2"):
        assert secret not in str(in_a_run.value)
    assert "***" in str(in_a_run.value)


async def test_a_gateways_basic_credentials_quoted_back_are_never_shown(
    server: OddServer,
) -> None:
    """A gateway's 401 may quote the Authorization it got: `Basic` base64 of user:password."""
    basic = base64.b64encode(b"bob:p@ssw0rd").decode()
    async with LLM_PROVIDERS["openai"](settings(server, userinfo="bob:p%40ssw0rd@")) as llm:
        server.status = 401
        server.plan = json.dumps(
            {"error": {"message": f"bad Authorization: Basic {basic}"}}
        ).encode()
        with pytest.raises(LLMAuthError) as caught:
            await llm.plan(PlanRequest(question="Why?", breadth=2, report=RecordingReporter()))
    message = str(caught.value)
    assert basic not in message
    assert "p@ssw0rd" not in message
    assert "bad Authorization: Basic ***" in message


async def test_a_stop_at_the_token_limit_counts_the_budget_spent_without_usage(
    server: OddServer,
) -> None:
    """Several tokens a chunk and no usage: the text looks short, the server said `length`."""
    server.stream = [text("要解析JSON字符串"), chunk(finish="length")]
    answer, usage, estimated = await answer_and_usage(server, max_tokens=45)
    assert answer == "要解析JSON字符串"
    assert estimated
    assert usage.completion_tokens == 45


@pytest.mark.parametrize(
    ("finish", "said"),
    [
        ("content_filter", "the server's content filter stopped it"),
        ("tool_calls", "the model called a tool, and this service offers none"),
    ],
)
async def test_a_stream_stopped_by_a_filter_or_for_a_tool_is_broken_not_an_answer(
    server: OddServer, finish: str, said: str
) -> None:
    server.stream = [text("Use json"), chunk(finish=finish)]
    with pytest.raises(LLMStreamBroken, match=rf"after 8 characters \({said}\)"):
        await answer(server)
    server.stream = [chunk(finish=finish)]
    with pytest.raises(LLMStreamBroken, match=rf"after 0 characters \({said}\)"):
        await answer(server)


async def test_a_refusal_is_the_answer(server: OddServer) -> None:
    server.stream = [chunk({"refusal": "I cannot help with that."}), chunk(finish="stop")]
    assert await answer(server) == "I cannot help with that."


async def test_a_server_reasoning_past_the_budget_is_stopped_there(server: OddServer) -> None:
    """It ignores max_tokens and thinks on without end: the budget stops it, not a timeout."""

    def endless() -> Any:
        while True:
            yield chunk({"reasoning_content": "Let me think about that some more. " * 4})

    server.stream = endless()
    async with LLM_PROVIDERS["openai"](settings(server)) as llm:
        report = RecordingReporter()
        request = AnswerRequest(question="How?", sources=SOURCES, report=report, max_tokens=50)
        async with asyncio.timeout(10):
            assert [p async for p in llm.synthesize(request)] == []
            await server.stream_closed.wait()  # the provider hung up
    ((usage, _),) = report.usages
    assert usage.completion_tokens >= 50


async def test_a_stream_that_ends_before_its_answer_says_so_not_a_python_name(
    server: OddServer,
) -> None:
    server.stream = [chunk({"reasoning_content": "thinking..."}), b"data: [DONE]\n\n"]
    with pytest.raises(LLMConnectError) as caught:
        await answer(server)
    message = str(caught.value)
    assert "(the stream ended before the answer began) after 1 attempt; check its logs" in message
    assert "StopAsyncIteration" not in message


async def test_an_error_event_after_text_keeps_the_servers_words(server: OddServer) -> None:
    error = b'data: {"error": {"message": "CUDA out of memory"}}\n\n'
    server.stream = [text("Use json"), error]
    with pytest.raises(LLMStreamBroken, match=r"\(the server's error: CUDA out of memory\)"):
        await answer(server)


async def test_a_trickled_plan_reply_must_arrive_within_the_read_timeout(
    server: OddServer,
) -> None:
    """A space every 0.3 s keeps each read within the timeout; the whole reply is not."""
    server.plan, server.trickle_s = plan_reply(b'[\\"json\\"]'), 0.3
    timeouts = {"llm_first_token_timeout_s": 1.0, "llm_token_timeout_s": 1.0}
    async with LLM_PROVIDERS["openai"](settings(server, **timeouts)) as llm:
        async with asyncio.timeout(10):
            with pytest.raises(LLMTimeout, match="did not answer in time"):
                await llm.plan(PlanRequest(question="Why?", breadth=2, report=RecordingReporter()))


def test_the_http_clients_request_lines_show_no_password() -> None:
    """httpx2 logs each request's URL at INFO: a gateway's password must not be in it."""
    url = httpx2.URL("http://gate:hunter2@127.0.0.1:9/v1/chat/completions")
    args = ("POST", url, "HTTP/1.1", 200, "OK")
    record = logging.LogRecord(
        "httpx2", logging.INFO, __file__, 0, 'HTTP Request: %s %s "%s %d %s"', args, None
    )
    assert hide_url_passwords(record)
    assert record.getMessage() == (
        'HTTP Request: POST http://127.0.0.1:9/v1/chat/completions "HTTP/1.1 200 OK"'
    )


@pytest.mark.parametrize("count", [10**30, -3])
async def test_a_usage_no_call_could_have_is_taken_as_none(server: OddServer, count: int) -> None:
    """10**30 tokens reached `done.usage` as it was (and spent any budget at once)."""
    usage = {"prompt_tokens": 10, "completion_tokens": count, "total_tokens": count}
    body = {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [],
            "usage": usage}  # fmt: skip
    server.stream = [
        text("Use json."),
        chunk(finish="stop"),
        b"data: " + json.dumps(body).encode() + b"\n\n",
    ]
    answer, usage_seen, estimated = await answer_and_usage(server, max_tokens=100)
    assert answer == "Use json."
    assert estimated
    assert usage_seen.completion_tokens == 3  # "Use json." estimated, about 4 characters a token
