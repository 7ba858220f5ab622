"""OpenAILLM driven through the real openai SDK against the wire-level fake server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import openai
import pytest

from research_service.errors import ConfigError, LLMError
from research_service.providers.base import AnswerRequest, LLMProvider, PlanRequest, Source, Usage
from research_service.providers.llm_errors import (
    LLMAuthError,
    LLMBadRequest,
    LLMBadResponse,
    LLMStreamBroken,
    LLMTimeout,
    LLMUnavailable,
)
from research_service.providers.openai_llm import OpenAILLM
from research_service.providers.plan_parsing import PlanFormat
from tests.fake_openai import (
    DEFAULT_MODEL,
    Cut,
    ErrorEvent,
    FakeOpenAI,
    HTTPError,
    Malformed,
    Reply,
    Reset,
    SlowResponse,
    Stall,
    rate_limited,
    wants_json,
)
from tests.fake_openai import Usage as FakeUsage
from tests.fakes import RecordingReporter
from tests.loopback import refused_port

MAX_WAIT_S = 0.005  # keeps every retry wait tiny; Retry-After is capped to it
QUESTION = "How do I read a gzip file in Python?"
SOURCES = [
    Source(1, "gzip docs", "https://docs.python.org/3/library/gzip.html", "gzip.open reads."),
    Source(2, "io docs", "https://docs.python.org/3/library/io.html", "Text wrappers."),
]


def planning(
    report: RecordingReporter, question: str = QUESTION, *, breadth: int = 2
) -> PlanRequest:
    """A planning request for `question`, reporting to `report`."""
    return PlanRequest(question=question, breadth=breadth, report=report)


def answering(
    report: RecordingReporter,
    sources: Sequence[Source] = SOURCES,
    *,
    question: str = QUESTION,
    max_tokens: int | None = None,
) -> AnswerRequest:
    """An answer request for `question` from `sources`, reporting to `report`."""
    return AnswerRequest(question=question, sources=sources, report=report, max_tokens=max_tokens)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def report() -> RecordingReporter:
    return RecordingReporter()


def make_llm(base_url: str, *, timeout: float = 10.0, **options: Any) -> OpenAILLM:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=timeout)
    settings: dict[str, Any] = {
        "planner_model": DEFAULT_MODEL,
        "synth_model": DEFAULT_MODEL,
        "max_attempts": 3,
        "max_wait_s": MAX_WAIT_S,
        "json_schema": True,
    }
    return OpenAILLM(client=client, **(settings | options))


@pytest.fixture
async def llm(fake: FakeOpenAI) -> AsyncIterator[OpenAILLM]:
    model = make_llm(fake.base_url)
    yield model
    await model.close()


async def answer(
    llm: OpenAILLM,
    report: RecordingReporter,
    sources: Sequence[Source] = SOURCES,
    *,
    max_tokens: int | None = None,
) -> list[str]:
    return [
        piece async for piece in llm.synthesize(answering(report, sources, max_tokens=max_tokens))
    ]


async def answer_until_error(
    llm: OpenAILLM, report: RecordingReporter
) -> tuple[list[str], LLMError]:
    pieces: list[str] = []

    async def consume() -> None:
        async for piece in llm.synthesize(answering(report, SOURCES)):
            pieces.append(piece)

    with pytest.raises(LLMError) as caught:
        await consume()
    return pieces, caught.value


def test_is_an_llm_provider(llm: OpenAILLM) -> None:
    provider: LLMProvider = llm  # mypy checks the Protocol here
    assert provider.name == "openai"


# --- planning ---------------------------------------------------------------------------


async def test_plan_asks_for_a_strict_json_schema(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.add(
        Reply.json({"queries": ["gzip open", "gzip text mode"]}, usage=FakeUsage(40, 9))
    )
    plan = await llm.plan(planning(report, breadth=3))
    assert plan.queries == ["gzip open", "gzip text mode"]
    assert plan.fallback is None
    (request,) = fake.chat_requests
    assert request.response_format_type == "json_schema"
    assert request.json["response_format"]["json_schema"]["strict"] is True
    assert not request.stream
    assert request.last_user_message == QUESTION
    assert report.usages == [(Usage(40, 9), False)]
    assert report.retries == []


async def test_plan_falls_back_to_json_object_and_remembers(report: RecordingReporter) -> None:
    async with FakeOpenAI(reject_json_schema=True) as fake:
        llm = make_llm(fake.base_url)
        fake.script.always(Reply.json({"queries": ["q"]}, when=wants_json))
        assert (await llm.plan(planning(report))).queries == ["q"]
        assert (await llm.plan(planning(report))).queries == ["q"]
        await llm.close()
    formats = [r.response_format_type for r in fake.chat_requests]
    assert formats == ["json_schema", "json_object", "json_object"]
    assert [r.status for r in fake.chat_requests] == [400, 200, 200]
    assert llm.plan_format is PlanFormat.JSON_OBJECT
    assert report.retries == []


async def test_plan_falls_back_to_plain_prompting(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.reject_json_schema = True
    fake.script.fail(
        HTTPError(status=400, message="response_format json_object is not supported"),
        when=lambda r: r.response_format_type == "json_object",
    )
    fake.script.reply(
        'Plan:\n```json\n{"queries": ["plain"]}\n```', when=lambda r: r.response_format is None
    )
    plan = await llm.plan(planning(report))
    assert plan.queries == ["plain"]
    assert [r.response_format_type for r in fake.chat_requests] == [
        "json_schema",
        "json_object",
        None,
    ]
    assert llm.plan_format is PlanFormat.PROMPT


async def test_json_schema_disabled_starts_with_json_object(
    fake: FakeOpenAI, report: RecordingReporter
) -> None:
    llm = make_llm(fake.base_url, json_schema=False)
    fake.script.add(Reply.json({"queries": ["q"]}))
    await llm.plan(planning(report))
    await llm.close()
    assert fake.chat_requests[0].response_format_type == "json_object"


async def test_unusable_plan_is_retried_once_with_the_error(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("I would search the web.")
    fake.script.add(Reply.json({"queries": ["second try"]}))
    plan = await llm.plan(planning(report))
    assert plan.queries == ["second try"]
    assert plan.fallback is None
    second = fake.chat_requests[1]
    roles = [m["role"] for m in second.messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert second.messages[2]["content"] == "I would search the web."
    assert "no JSON object found in the reply" in second.last_user_message
    assert len(report.usages) == 2


async def test_twice_unusable_plan_falls_back_to_the_question(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("no idea")
    fake.script.add(Reply.json({"queries": []}))
    plan = await llm.plan(PlanRequest(question=f"  {QUESTION}\n", breadth=2, report=report))
    assert plan.queries == [QUESTION]
    assert plan.fallback == (
        'the model\'s plan was unusable ("queries" held no non-empty search queries); '
        "searching the question itself"
    )
    assert len(fake.chat_requests) == 2


async def test_plan_usage_is_estimated_when_the_server_sends_none(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.add(Reply.json({"queries": ["q"]}, usage=None))
    await llm.plan(planning(report))
    ((usage, estimated),) = report.usages
    assert estimated is True
    assert usage.prompt_tokens > 10
    assert usage.completion_tokens > 0


async def test_plan_strips_reasoning(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply('{"queries": ["visible"]}', think='{"queries": ["hidden"]}')
    assert (await llm.plan(planning(report))).queries == ["visible"]


async def test_plan_retries_a_rate_limit(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.fail(rate_limited(retry_after=1))
    fake.script.add(Reply.json({"queries": ["q"]}))
    assert (await llm.plan(planning(report))).queries == ["q"]
    assert report.retries == [(2, 5, "429 Too Many Requests")]


# --- synthesis ----------------------------------------------------------------------------


async def test_synthesis_streams_pieces_and_reports_usage(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    reply = fake.script.reply("Use gzip.open [1] in text mode [2].", usage=FakeUsage(120, 11))
    pieces = await answer(llm, report)
    assert "".join(pieces) == reply.text
    assert len(pieces) > 3  # streamed, not collected
    (request,) = fake.chat_requests
    assert request.stream
    assert request.include_usage
    assert request.max_tokens is None
    assert "[n]" not in request.text
    assert "[1] gzip docs — https://docs.python.org/3/library/gzip.html\ngzip.open reads." in (
        request.text
    )
    assert "square brackets" in request.messages[0]["content"]
    assert request.last_user_message.endswith(f"Question: {QUESTION}")
    assert report.usages == [(Usage(120, 11), False)]


async def test_synthesis_says_when_there_are_no_sources(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("Nothing to cite.")
    assert "".join(await answer(llm, report, sources=[])) == "Nothing to cite."
    assert "(no sources were found)" in fake.chat_requests[0].text


async def test_synthesis_usage_is_estimated_when_none_is_sent(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("An answer without usage.", reasoning="some billed thoughts", usage=None)
    await answer(llm, report)
    ((usage, estimated),) = report.usages
    assert estimated is True
    assert usage.completion_tokens >= len("An answer without usage.some billed thoughts") // 4


async def test_think_blocks_never_leak(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("The answer [1].", think="secret chain of thought")
    pieces = await answer(llm, report)
    assert "".join(pieces) == "The answer [1]."
    assert all("think" not in piece and "secret" not in piece for piece in pieces)


async def test_think_tags_split_across_chunks(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply(pieces=["<th", "ink>hid", "den</th", "ink>\n\nThe", " answer", " [1]."])
    assert "".join(await answer(llm, report)) == "The answer [1]."


async def test_unclosed_think_at_the_end_is_dropped(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply(pieces=["Shown", " <think>", "never closed"])
    assert "".join(await answer(llm, report)) == "Shown "


async def test_reasoning_content_is_ignored(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("Visible [2].", reasoning="private reasoning")
    fake.script.reply("Also visible.", reasoning="more", reasoning_field="reasoning")
    assert "".join(await answer(llm, report)) == "Visible [2]."
    assert "".join(await answer(llm, report)) == "Also visible."


async def test_max_tokens_is_forwarded(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("one two three four five six")
    pieces = await answer(llm, report, max_tokens=3)
    assert fake.chat_requests[0].json["max_tokens"] == 3
    assert "".join(pieces) == "one two three"  # the server stopped at the limit


async def test_closing_the_iterator_disconnects_the_stream(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    stall = Stall(after=3)
    fake.script.reply("one two three four five six", faults=[stall])
    pieces = llm.synthesize(answering(report, SOURCES))
    got = [await anext(pieces), await anext(pieces)]
    await pieces.aclose()
    request = fake.chat_requests[0]
    await asyncio.wait_for(request.disconnected.wait(), 5)
    stall.release.set()
    assert got == ["one", " two"]
    assert request.tokens_sent == 3
    assert not request.completed.is_set()
    ((_, estimated),) = report.usages
    assert estimated is True


# --- retries and failures -----------------------------------------------------------------


async def test_rate_limit_with_retry_after_then_success(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.fail(rate_limited(retry_after=2))
    fake.script.fail(rate_limited(retry_after=None, retry_after_ms=3))
    fake.script.reply("Finally.")
    assert "".join(await answer(llm, report)) == "Finally."
    assert report.retries == [(2, 5, "429 Too Many Requests"), (3, 3, "429 Too Many Requests")]
    assert len(fake.chat_requests) == 3


async def test_server_errors_are_retried(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.fail(HTTPError(status=500))
    fake.script.fail(HTTPError(status=503))
    fake.script.reply("Recovered.")
    assert "".join(await answer(llm, report)) == "Recovered."
    assert [(a, r) for a, _, r in report.retries] == [
        (2, "500 Internal Server Error"),
        (3, "503 Service Unavailable"),
    ]
    assert all(0 <= wait <= 5 for _, wait, _ in report.retries)


async def test_persistent_server_errors_end_in_llm_unavailable(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    for _ in range(3):
        fake.script.fail(HTTPError(status=502, message="upstream down"))
    _, error = await answer_until_error(llm, report)
    assert isinstance(error, LLMUnavailable)
    assert error.code == "llm_unavailable"
    assert "upstream down" in str(error)
    assert "after 3 attempts" in str(error)
    assert len(fake.chat_requests) == 3


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, LLMBadRequest),
        (401, LLMAuthError),
        (403, LLMAuthError),
        (404, LLMBadRequest),
        (422, LLMBadRequest),
    ],
)
async def test_request_errors_are_not_retried(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter, status: int, cls: type[LLMError]
) -> None:
    fake.script.fail(HTTPError(status=status, message="nope"))
    _, error = await answer_until_error(llm, report)
    assert type(error) is cls
    assert error.code in {"llm_bad_request", "llm_auth"}
    assert "nope" in str(error)
    assert len(fake.chat_requests) == 1
    assert report.retries == []


async def test_wrong_api_key_says_to_set_it(report: RecordingReporter) -> None:
    async with FakeOpenAI(api_key="right") as fake:
        llm = make_llm(fake.base_url)
        with pytest.raises(LLMAuthError, match="set OPENAI_API_KEY"):
            await llm.plan(planning(report))
        await llm.close()
    assert len(fake.chat_requests) == 1


async def test_connection_reset_before_first_byte_is_retried(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.fail(Reset())
    fake.script.reply("After the reset.")
    assert "".join(await answer(llm, report)) == "After the reset."
    assert [(a, r) for a, _, r in report.retries] == [(2, "connection error")]


async def test_stream_cut_before_the_first_token_is_retried(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    # Reasoning was streamed but no answer text yet: nothing was sent, so try again.
    fake.script.reply("Lost answer.", reasoning="thinking hard", faults=[Cut(after=2)])
    fake.script.reply("Second answer.")
    assert "".join(await answer(llm, report)) == "Second answer."
    assert [(a, r) for a, _, r in report.retries] == [(2, "connection error")]


async def test_stream_cut_after_tokens_is_broken_and_not_retried(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("one two three four five", faults=[Cut(after=2)])
    pieces, error = await answer_until_error(llm, report)
    assert pieces == ["one", " two"]
    assert isinstance(error, LLMStreamBroken)
    assert error.code == "llm_stream_broken"
    assert "after 7 characters" in str(error)
    assert len(fake.chat_requests) == 1
    assert report.retries == []
    ((_, estimated),) = report.usages
    assert estimated is True


async def test_error_event_mid_stream_is_broken(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("one two three", faults=[ErrorEvent(after=1, message="engine died")])
    pieces, error = await answer_until_error(llm, report)
    assert pieces == ["one"]
    assert error.code == "llm_stream_broken"
    assert len(fake.chat_requests) == 1


async def test_malformed_chunk_after_tokens_is_broken(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("one two three", faults=[Malformed(after=1)])
    pieces, error = await answer_until_error(llm, report)
    assert pieces == ["one"]
    assert error.code == "llm_stream_broken"
    assert "malformed response" in str(error)


async def test_malformed_chunk_before_tokens_is_a_bad_response(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.reply("one two", faults=[Malformed(after=0)])
    pieces, error = await answer_until_error(llm, report)
    assert pieces == []
    assert isinstance(error, LLMBadResponse)
    assert "OPENAI_BASE_URL" in str(error)
    assert len(fake.chat_requests) == 1


async def test_timeouts_are_retried_then_named(fake: FakeOpenAI, report: RecordingReporter) -> None:
    llm = make_llm(fake.base_url, timeout=0.1, max_attempts=2)
    fake.script.fail(SlowResponse())
    fake.script.fail(SlowResponse())
    _, error = await answer_until_error(llm, report)
    await llm.close()
    assert isinstance(error, LLMTimeout)
    assert [(a, r) for a, _, r in report.retries] == [(2, "timeout")]


# --- start-up check -------------------------------------------------------------------------


async def test_check_passes_against_a_live_server(fake: FakeOpenAI, llm: OpenAILLM) -> None:
    await llm.check()
    assert [r.path for r in fake.requests] == ["/v1/models"]


async def test_check_rejects_a_wrong_key() -> None:
    async with FakeOpenAI(api_key="right") as fake:
        llm = make_llm(fake.base_url)
        with pytest.raises(ConfigError, match=r"rejected the API key .*; set OPENAI_API_KEY"):
            await llm.check()
        await llm.close()


async def test_check_names_an_unreachable_server() -> None:
    port = refused_port()
    llm = make_llm(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ConfigError) as caught:
        await llm.check()
    await llm.close()
    message = str(caught.value)
    assert message.startswith(f"cannot reach the model server at http://127.0.0.1:{port}/v1: ")
    assert message.endswith("; start it or fix OPENAI_BASE_URL")


async def test_check_says_the_base_url_lacks_v1_on_404(fake: FakeOpenAI) -> None:
    llm = make_llm(fake.url + "/other")  # the fake answers 404 off /v1
    with pytest.raises(ConfigError, match="/v1"):
        await llm.check()
    await llm.close()


async def test_max_completion_tokens_is_used_when_the_server_asks_for_it(
    fake: FakeOpenAI, llm: OpenAILLM, report: RecordingReporter
) -> None:
    fake.script.fail(
        HTTPError(
            status=400,
            message="Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
        )
    )
    fake.script.reply("Short answer [1].")
    fake.script.reply("Second answer [1].")
    sources = [Source(1, "t", "https://example.org", "s")]
    first = [
        p async for p in llm.synthesize(answering(report, sources, question="q?", max_tokens=50))
    ]
    second = [
        p async for p in llm.synthesize(answering(report, sources, question="q?", max_tokens=40))
    ]
    assert "".join(first) == "Short answer [1]."
    assert "".join(second) == "Second answer [1]."
    rejected, accepted, remembered = fake.chat_requests
    assert rejected.json["max_tokens"] == 50
    assert accepted.json["max_completion_tokens"] == 50
    assert "max_tokens" not in accepted.json
    assert remembered.json["max_completion_tokens"] == 40
    assert not report.retries


async def test_check_warns_about_an_unlisted_model(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    llm = make_llm(fake.base_url, synth_model="missing-model")
    await llm.check()
    await llm.close()
    assert "does not list model 'missing-model' (RESEARCH_SYNTH_MODEL)" in caplog.text


async def test_connect_timeout_has_its_own_code(report: RecordingReporter) -> None:
    """A server whose accept queue is full never completes the handshake: a connect timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    # Fill the accept queue (never accepted), so the next handshake gets no answer.
    fillers = [socket.socket() for _ in range(4)]
    for sock in fillers:
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
    client = openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="test",
        max_retries=0,
        timeout=openai.Timeout(5.0, connect=0.2),
    )
    model = OpenAILLM(
        client=client, planner_model="m", synth_model="m", max_attempts=1, max_wait_s=0.01
    )
    try:
        with pytest.raises(LLMError) as caught:
            await model.plan(PlanRequest(question="q?", breadth=1, report=report))
    finally:
        await model.close()
        for sock in fillers:
            sock.close()
        listener.close()
    assert caught.value.code == "llm_connect_timeout"
