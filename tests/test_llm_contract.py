"""The LLM contract: every model backend plans, answers, stops and fails the same way.

Backends: `builtin`; `openai` (the real SDK over HTTP against the fake OpenAI server);
`taping` (the builtin model taped onto a cassette) and `cassette` (that cassette played back);
`no_model`, the replay server's stand-in, only where refusing is the property.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final

import openai
import pytest

from research_service.errors import ProviderError
from research_service.providers.base import (
    AnswerRequest,
    FollowUpRequest,
    LLMProvider,
    PlanRequest,
    Source,
    Usage,
    estimate_tokens,
)
from research_service.providers.builtin_llm import BuiltinLLM, compose_answer
from research_service.providers.cassettes import (
    CASSETTE_FILE,
    Cassette,
    CassetteLLM,
    CassetteWriter,
    TapingLLM,
)
from research_service.providers.openai_llm import OpenAILLM
from research_service.recordings.stand_ins import NoModel
from tests.fake_openai import (
    DEFAULT_MODEL,
    FakeOpenAI,
    HTTPError,
    Reply,
    Stall,
    streaming,
    wants_json,
)
from tests.fakes import RecordingReporter

QUESTION: Final = "How do I brew green tea?"
SOURCES: Final = (
    Source(
        1,
        "Brewing green tea",
        "https://example.org/tea",
        "Green tea is brewed with water at about 80 degrees for two to three minutes. "
        "Boiling water makes green tea bitter, so let the kettle cool first.",
    ),
    Source(
        2,
        "Brewing coffee",
        "https://example.org/coffee",
        "Filter coffee is brewed with water just off the boil for about four minutes.",
    ),
)
BREADTH: Final = 2
ASKED: Final = ("green tea brew",)
OPENAI_ANSWER: Final = "Brew green tea at about 80 degrees for two to three minutes [1]."
ANSWERING: Final = ("builtin", "openai", "taping", "cassette")
FAILING: Final = ("openai", "cassette", "no_model")


def planning(report: RecordingReporter, question: str = QUESTION) -> PlanRequest:
    return PlanRequest(question=question, breadth=BREADTH, report=report)


def following_up(report: RecordingReporter, question: str = QUESTION) -> FollowUpRequest:
    return FollowUpRequest(
        question=question, sources=SOURCES, asked=ASKED, breadth=BREADTH, report=report
    )


def answering(report: RecordingReporter, question: str = QUESTION) -> AnswerRequest:
    return AnswerRequest(question=question, sources=SOURCES, report=report)


class Backend:
    """One model under contract, and how a test scripts and observes it."""

    def __init__(self, llm: LLMProvider) -> None:
        self.llm = llm

    def will_plan(self) -> None:
        """Make the next plan and follow-up calls answer (a scripted server needs telling)."""

    def will_answer(self, *, slowly: bool = False) -> None:
        """Make the next answer call answer; `slowly` lets a test close it midway."""

    def will_fail(self) -> str:
        """Make the next calls fail; return the question to ask for that."""
        raise AssertionError(f"{self.llm.name} has no failure mode")

    async def written(self) -> str:
        """The whole answer the model wrote for the last answer call."""
        return compose_answer(QUESTION, SOURCES)

    async def assert_stopped(self, taken: list[str], report: RecordingReporter) -> None:
        """The model produced nothing after the stream was closed with `taken` read."""
        ((usage, estimated),) = report.usages
        assert estimated
        assert usage.completion_tokens == estimate_tokens("".join(taken))


class OpenAIBackend(Backend):
    def __init__(self, llm: LLMProvider, fake: FakeOpenAI) -> None:
        super().__init__(llm)
        self.fake = fake
        self.stall: Stall | None = None

    def will_plan(self) -> None:
        # More queries than asked for: the model caps them at the breadth.
        queries = ["green tea temperature", "green tea steeping time", "tea kettle"]
        self.fake.script.always(Reply.json({"queries": queries}, when=wants_json))

    def will_answer(self, *, slowly: bool = False) -> None:
        self.stall = Stall(after=3) if slowly else None
        pieces = OPENAI_ANSWER.split(" ")
        pieces = [p if n == 0 else f" {p}" for n, p in enumerate(pieces)]
        faults = [self.stall] if self.stall else []
        self.fake.script.reply(pieces=pieces, faults=faults, when=streaming)

    def will_fail(self) -> str:
        for status in (401, 400, 400):
            self.fake.script.fail(HTTPError(status=status))
        return QUESTION

    async def written(self) -> str:
        return self.fake.chat_requests[-1].text_sent

    async def assert_stopped(self, taken: list[str], report: RecordingReporter) -> None:
        request = self.fake.chat_requests[-1]
        await asyncio.wait_for(request.disconnected.wait(), 5)
        assert self.stall is not None
        self.stall.release.set()
        assert request.tokens_sent == 3  # where the server paused: not one more
        assert not request.completed.is_set()
        assert [estimated for _, estimated in report.usages] == [True]


class TapingBackend(Backend):
    def __init__(self, llm: TapingLLM, folder: Path) -> None:
        super().__init__(llm)
        self.path = folder / CASSETTE_FILE

    def taped(self, kind: str) -> list[dict[str, object]]:
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        return [entry for entry in map(json.loads, lines) if entry["kind"] == kind]

    async def written(self) -> str:
        (taped,) = self.taped("synthesize")
        response = taped["response"]
        assert isinstance(response, dict)
        assert "".join(response["pieces"]) == compose_answer(QUESTION, SOURCES)
        return "".join(response["pieces"])

    async def assert_stopped(self, taken: list[str], report: RecordingReporter) -> None:
        await super().assert_stopped(taken, report)
        assert self.taped("synthesize") == []  # a cut-off answer is not taped


class CassetteBackend(Backend):
    def __init__(self, llm: LLMProvider, taped_answer: str) -> None:
        super().__init__(llm)
        self.taped_answer = taped_answer

    def will_fail(self) -> str:
        return "A question that was never taped?"

    async def written(self) -> str:
        return self.taped_answer

    async def assert_stopped(self, taken: list[str], report: RecordingReporter) -> None:
        assert len(taken) < len(self.taped_answer.split())
        # Playing back reports the taped usage with the whole answer; cut off, it reports none.
        assert report.usages == []


class NoModelBackend(Backend):
    def will_fail(self) -> str:
        return QUESTION  # it refuses every call


async def _tape(folder: Path) -> str:
    """Tape the builtin model's plan, follow-up and answer; return the answer."""
    taping = TapingLLM(BuiltinLLM(token_delay_ms=0), CassetteWriter(folder))
    report = RecordingReporter()
    await taping.plan(planning(report))
    await taping.follow_up(following_up(report))
    return "".join([piece async for piece in taping.synthesize(answering(report))])


@pytest.fixture
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    name = request.param
    if name == "builtin":
        yield Backend(BuiltinLLM(token_delay_ms=0))
    elif name == "openai":
        async with FakeOpenAI() as fake:
            client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
            llm = OpenAILLM(
                client=client, planner_model=DEFAULT_MODEL, synth_model=DEFAULT_MODEL, max_wait_s=0
            )
            yield OpenAIBackend(llm, fake)
            await llm.close()
    elif name == "taping":
        yield TapingBackend(
            TapingLLM(BuiltinLLM(token_delay_ms=0), CassetteWriter(tmp_path)), tmp_path
        )
    elif name == "cassette":
        answer = await _tape(tmp_path)
        yield CassetteBackend(CassetteLLM(Cassette.load(tmp_path)), answer)
    else:
        yield NoModelBackend(NoModel())


def test_every_backend_is_an_llm_provider() -> None:
    providers: list[LLMProvider] = [BuiltinLLM(), NoModel()]  # mypy checks the Protocol
    assert all(provider.name for provider in providers)


@pytest.mark.parametrize("backend", ANSWERING, indirect=True)
async def test_plan_is_one_to_breadth_queries(backend: Backend) -> None:
    backend.will_plan()
    plan = await backend.llm.plan(planning(RecordingReporter()))
    assert 1 <= len(plan.queries) <= BREADTH
    assert all(isinstance(query, str) and query.strip() for query in plan.queries)
    assert plan.fallback is None


@pytest.mark.parametrize("backend", ANSWERING, indirect=True)
async def test_follow_up_is_at_most_breadth_queries(backend: Backend) -> None:
    backend.will_plan()
    queries = await backend.llm.follow_up(following_up(RecordingReporter()))
    assert len(queries) <= BREADTH
    assert all(isinstance(query, str) and query.strip() for query in queries)


@pytest.mark.parametrize("backend", ANSWERING, indirect=True)
async def test_streamed_answer_is_the_text_the_model_wrote(backend: Backend) -> None:
    backend.will_answer()
    pieces = [piece async for piece in backend.llm.synthesize(answering(RecordingReporter()))]
    assert len(pieces) > 1, "the answer is streamed in pieces"
    assert "".join(pieces) == await backend.written()
    assert "[1]" in "".join(pieces)


@pytest.mark.parametrize("backend", ANSWERING, indirect=True)
async def test_closing_the_stream_early_stops_the_model(backend: Backend) -> None:
    backend.will_answer(slowly=True)
    report = RecordingReporter()
    stream = backend.llm.synthesize(answering(report))
    taken = [await anext(stream), await anext(stream)]
    await stream.aclose()  # type: ignore[attr-defined]  # every backend's is an async generator
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    await backend.assert_stopped(taken, report)


@pytest.mark.parametrize("backend", ANSWERING, indirect=True)
async def test_usage_is_reported_for_every_call(backend: Backend) -> None:
    backend.will_plan()
    backend.will_answer()
    calls = [RecordingReporter() for _ in range(3)]
    await backend.llm.plan(planning(calls[0]))
    await backend.llm.follow_up(following_up(calls[1]))
    async for _ in backend.llm.synthesize(answering(calls[2])):
        pass
    for report in calls:
        total = sum((usage for usage, _ in report.usages), Usage())
        assert total.prompt_tokens > 0
        assert total.completion_tokens > 0


@pytest.mark.parametrize("backend", FAILING, indirect=True)
async def test_failures_are_provider_errors_with_a_code(backend: Backend) -> None:
    question = backend.will_fail()
    report = RecordingReporter()

    async def answer() -> None:
        async for _ in backend.llm.synthesize(answering(report, question)):
            pass

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: backend.llm.plan(planning(report, question)),
        lambda: backend.llm.follow_up(following_up(report, question)),
        answer,
    ]
    for call in calls:
        with pytest.raises(ProviderError) as failed:
            await call()
        error = failed.value
        assert error.code.startswith("llm_"), error.code
        assert error.provider == backend.llm.name
        assert str(error)
    assert report.retries == []  # none of these failures is worth another try


@pytest.mark.parametrize("backend", ["no_model"], indirect=True)
async def test_the_no_model_stand_in_refuses_and_says_what_to_use(backend: Backend) -> None:
    report = RecordingReporter()
    with pytest.raises(ProviderError) as failed:
        await backend.llm.plan(planning(report))
    assert failed.value.code == "llm_error"
    assert failed.value.provider == "replay"
    assert "research-service serve" in str(failed.value)
    assert report.usages == []
