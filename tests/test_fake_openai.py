"""The fake OpenAI server, driven by the real `openai` SDK over loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from tests.fake_openai import (
    Cut,
    ErrorEvent,
    FakeOpenAI,
    HTTPError,
    Malformed,
    Reply,
    Reset,
    SlowResponse,
    Stall,
    Usage,
    mentions,
    rate_limited,
    wants_json,
)

WAIT = 5.0  # seconds: a bound on waiting for an event, never a sleep
MODEL = "fake-model"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is up?"}]
PLAN_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {
        "name": "plan",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"queries": {"type": "array", "items": {"type": "string"}}},
            "required": ["queries"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def sdk(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
    yield client
    await client.close()


async def stream(sdk: openai.AsyncOpenAI, **options: Any) -> list[ChatCompletionChunk]:
    """Every chunk of one streamed completion with usage requested."""
    chunks = await sdk.chat.completions.create(
        model=MODEL,
        messages=USER,
        stream=True,
        stream_options={"include_usage": True},
        **options,
    )
    return [chunk async for chunk in chunks]


async def collect(chunks: AsyncStream[ChatCompletionChunk], into: list[str]) -> None:
    """Append each chunk's content to `into` until the stream ends or fails."""
    async for chunk in chunks:
        into.append(chunk.choices[0].delta.content or "")


def contents(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].delta.content or "" for c in chunks if c.choices]


async def test_non_streaming_completion_is_parsed_and_the_request_recorded(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.reply("Hello [1].", usage=Usage(12, 3))
    completion = await sdk.chat.completions.create(model=MODEL, messages=USER)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello [1]."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (12, 15)
    [request] = fake.requests
    assert (request.method, request.path, request.authorization) == (
        "POST",
        "/v1/chat/completions",
        "Bearer test",
    )
    assert request.json["messages"] == USER
    assert request.status == 200
    assert request.completed.is_set()


async def test_stream_sends_role_then_pieces_then_finish_then_usage(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.reply(pieces=["The ", "answer ", "[1]."], usage=Usage(20, 3))
    chunks = await stream(sdk)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert contents(chunks) == ["", "The ", "answer ", "[1].", ""]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])
    [request] = fake.requests
    assert request.include_usage
    assert (request.tokens_sent, request.text_sent) == (3, "The answer [1].")
    assert request.completed.is_set()
    assert not request.disconnected.is_set()


async def test_stream_bytes_on_the_wire(fake: FakeOpenAI) -> None:
    fake.script.reply(pieces=["Hi", "!"], usage=None)
    body = {"model": MODEL, "messages": USER, "stream": True}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{fake.base_url}/chat/completions", json=body)
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    head = '{"id":"chatcmpl-fake1","object":"chat.completion.chunk","created":1700000000,'
    head += '"model":"fake-model","system_fingerprint":"fp_fake_openai","choices":[{"index":0,'
    expected = [
        head + '"delta":{"role":"assistant","content":"","refusal":null},'
        '"logprobs":null,"finish_reason":null}]}',
        head + '"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}]}',
        head + '"delta":{"content":"!"},"logprobs":null,"finish_reason":null}]}',
        head + '"delta":{},"logprobs":null,"finish_reason":"stop"}]}',
        "[DONE]",
    ]
    assert response.content == b"".join(f"data: {e}\n\n".encode() for e in expected)


async def test_no_usage_chunk_unless_requested(fake: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    fake.script.reply("Hi there")
    chunks = await sdk.chat.completions.create(model=MODEL, messages=USER, stream=True)
    received = [chunk async for chunk in chunks]
    assert all(c.choices and c.usage is None for c in received)


async def test_predicates_route_planning_and_synthesis_calls(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.reply("Synthesized [1].", when=mentions("Sources:"))
    plan = fake.script.add(Reply.json({"queries": ["a", "b"]}, when=wants_json))
    completion = await sdk.chat.completions.create(
        model=MODEL,
        messages=USER,
        response_format=PLAN_FORMAT,
    )
    assert json.loads(completion.choices[0].message.content or "") == {"queries": ["a", "b"]}
    assert plan.served == [fake.requests[0]]
    assert fake.requests[0].response_format == PLAN_FORMAT
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Sources:\n[1] a"}]
    chunks = await sdk.chat.completions.create(model=MODEL, messages=messages, stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in chunks]) == "Synthesized [1]."
    assert fake.script.pending == []


async def test_json_schema_rejected_when_switched_off(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.reject_json_schema = True
    fake.script.add(Reply.json({"queries": ["a"]}, when=wants_json))
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(
            model=MODEL,
            messages=USER,
            response_format=PLAN_FORMAT,
        )
    assert caught.value.param == "response_format"
    completion = await sdk.chat.completions.create(
        model=MODEL,
        messages=USER,
        response_format={"type": "json_object"},
    )
    assert completion.choices[0].message.content == '{"queries": ["a"]}'


async def test_models_are_listed(fake: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    page = await sdk.models.list()
    assert [m.id for m in page.data] == [MODEL]
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("gpt-nonexistent")
    assert [r.path for r in fake.requests] == ["/v1/models", "/v1/models/gpt-nonexistent"]


async def test_wrong_api_key_is_refused(fake: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    fake.api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError):
        await sdk.models.list()


async def test_unscripted_request_gets_a_500_naming_it() -> None:
    async with FakeOpenAI(strict=False) as fake:
        sdk = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
        with pytest.raises(openai.InternalServerError, match=r"no scripted reply.*What is up"):
            await sdk.chat.completions.create(model=MODEL, messages=USER)
        await sdk.close()
    assert len(fake.problems) == 1


async def test_strict_fake_fails_the_test_on_unscripted_requests() -> None:
    async def post_unscripted() -> None:
        async with FakeOpenAI() as fake, httpx.AsyncClient() as http:
            await http.post(
                f"{fake.base_url}/chat/completions", json={"model": MODEL, "messages": USER}
            )

    with pytest.raises(AssertionError, match="no scripted reply"):
        await post_unscripted()


async def test_reasoning_deltas_and_think_tags(fake: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    fake.script.reply("Answer.", reasoning="Let me see.", think="hmm", usage=None)
    chunks = await stream(sdk)
    reasoning = [(c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in chunks]
    assert "".join(r for r in reasoning if r) == "Let me see."
    assert "".join(contents(chunks)) == "<think>hmm</think>Answer."


async def test_max_tokens_truncates_with_finish_reason_length(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.reply("one two three four")
    chunks = await stream(sdk, max_completion_tokens=2)
    assert "".join(contents(chunks)) == "one two"
    assert chunks[-2].choices[0].finish_reason == "length"


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_error_statuses_raise_the_sdk_error(
    fake: FakeOpenAI,
    sdk: openai.AsyncOpenAI,
    status: int,
    error: type[openai.APIStatusError],
    streamed: bool,
) -> None:
    fake.script.fail(HTTPError(status=status, message="scripted"))
    with pytest.raises(error, match="scripted") as caught:
        await stream(sdk) if streamed else await sdk.chat.completions.create(
            model=MODEL,
            messages=USER,
        )
    assert caught.value.status_code == status


async def test_rate_limit_carries_retry_after_headers(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.fail(rate_limited(retry_after=2, retry_after_ms=1500))
    with pytest.raises(openai.RateLimitError) as caught:
        await stream(sdk)
    headers = caught.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "1500")
    assert caught.value.code == "rate_limit_exceeded"


@pytest.mark.parametrize("streamed", [False, True])
async def test_reset_before_first_byte_is_a_connection_error(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI, streamed: bool
) -> None:
    fake.script.fail(Reset())
    with pytest.raises(openai.APIConnectionError) as caught:
        await stream(sdk) if streamed else await sdk.chat.completions.create(
            model=MODEL,
            messages=USER,
        )
    assert type(caught.value) is openai.APIConnectionError
    [request] = fake.requests
    assert request.closed_by_server
    assert not request.disconnected.is_set()


async def test_cut_stream_delivers_the_tokens_before_it_then_a_connection_error(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.reply("one two three four", faults=[Cut(after=2)])
    received: list[str] = []
    chunks = await sdk.chat.completions.create(model=MODEL, messages=USER, stream=True)
    with pytest.raises(openai.APIConnectionError):
        await collect(chunks, received)
    assert "".join(received) == "one two"
    assert fake.requests[0].text_sent == "one two"


async def test_cut_non_streaming_body_is_a_connection_error(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.reply("whole answer", faults=[Cut()])
    with pytest.raises(openai.APIConnectionError):
        await sdk.chat.completions.create(model=MODEL, messages=USER)


@pytest.mark.parametrize("streamed", [False, True])
async def test_malformed_json_raises_json_decode_error(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI, streamed: bool
) -> None:
    """The SDK does not wrap a bad `data:` line or body: json.loads' error reaches the caller."""
    fake.script.reply("one two", faults=[Malformed(after=1)])
    with pytest.raises(json.JSONDecodeError):
        await stream(sdk) if streamed else await sdk.chat.completions.create(
            model=MODEL,
            messages=USER,
        )


async def test_error_event_mid_stream_raises_api_error(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.reply("one two", faults=[ErrorEvent(after=1, message="model overloaded")])
    with pytest.raises(openai.APIError, match="model overloaded") as caught:
        await stream(sdk)
    assert type(caught.value) is openai.APIError


async def test_slow_first_token_holds_until_released(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    hold = Stall(after=0)
    fake.script.reply("late", faults=[hold])
    chunks = await sdk.chat.completions.create(model=MODEL, messages=USER, stream=True)
    first = asyncio.ensure_future(anext(chunks))
    async with asyncio.timeout(WAIT):
        await hold.reached.wait()
    assert not first.done()
    hold.release.set()
    async with asyncio.timeout(WAIT):
        assert (await first).choices[0].delta.role == "assistant"
        assert contents([c async for c in chunks]) == ["late", ""]


async def test_slow_response_holds_the_status_line(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    hold = SlowResponse()
    fake.script.reply("late", faults=[hold])
    call = asyncio.ensure_future(sdk.chat.completions.create(model=MODEL, messages=USER))
    async with asyncio.timeout(WAIT):
        await hold.reached.wait()
    assert not call.done()
    hold.release.set()
    async with asyncio.timeout(WAIT):
        assert (await call).choices[0].message.content == "late"


async def test_stall_beyond_the_read_timeout_times_out_and_the_fake_sees_the_hang_up(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    fake.script.reply("one two three", faults=[Stall(after=1)])
    chunks = await sdk.with_options(timeout=0.2).chat.completions.create(
        model=MODEL,
        messages=USER,
        stream=True,
    )
    with pytest.raises(openai.APITimeoutError):
        async for _ in chunks:
            pass
    [request] = fake.requests
    async with asyncio.timeout(WAIT):
        await request.disconnected.wait()
    assert (request.tokens_sent, request.completed.is_set()) == (1, False)


async def test_client_closing_a_stream_early_is_seen_as_a_disconnect(
    fake: FakeOpenAI, sdk: openai.AsyncOpenAI
) -> None:
    stall = Stall(after=2)
    fake.script.reply("one two three four", faults=[stall])
    chunks = await sdk.chat.completions.create(model=MODEL, messages=USER, stream=True)
    received = [(await anext(chunks)).choices[0].delta.content for _ in range(3)]
    assert received == ["", "one", " two"]
    async with asyncio.timeout(WAIT):
        await stall.reached.wait()
        await chunks.close()
        request = await fake.wait_for_request(1)
        await request.disconnected.wait()
    assert request.tokens_sent == 2
    assert not request.completed.is_set()


async def test_stream_only_fault_on_a_plain_request_is_a_problem() -> None:
    async with FakeOpenAI(strict=False) as fake:
        fake.script.reply("x", faults=[Stall(after=0)])
        async with httpx.AsyncClient() as http:
            body = {"model": MODEL, "messages": USER}
            response = await http.post(f"{fake.base_url}/chat/completions", json=body)
    assert response.status_code == 500
    assert "needs a streaming request" in fake.problems[0]


def test_pieces_must_join_to_the_text() -> None:
    with pytest.raises(ValueError, match="do not join"):
        Reply("abc", pieces=["a", "c"])


async def test_runs_by_hand_from_the_command_line() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fake_openai",
        "--port",
        "0",
        "--reply",
        "Hello [1].",
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT * 2):
            line = (await process.stdout.readline()).decode()
        base_url = line.split(" on ")[1].split()[0]
        sdk = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
        chunks = await sdk.chat.completions.create(model=MODEL, messages=USER, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in chunks]) == "Hello [1]."
        await sdk.close()
    finally:
        process.terminate()
        await process.wait()
