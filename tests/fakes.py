"""Scriptable in-process providers that stand in for a model and a search engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from research_service.errors import LLMError, SearchError
from research_service.providers.base import (
    AnswerRequest,
    FollowUpRequest,
    Plan,
    PlanRequest,
    SearchHit,
    Usage,
)


@dataclass
class ScriptedLLM:
    """Plans the scripted queries and streams the scripted pieces.

    `hold_after` pauses synthesis after that many pieces until `release` is set, so a
    test can act mid-answer. `plan_usage`/`synth_usage` are reported as a server would,
    `retries` are reported before the first piece, `fallback` marks the plan as one, and
    `closed` is set when the run stops reading the answer early.
    """

    queries: list[str] = field(default_factory=lambda: ["alpha", "beta"])
    pieces: list[str] = field(default_factory=lambda: ["The ", "answer ", "[1]."])
    hold_after: int | None = None
    fail_with: str | None = None
    name: str = "scripted"
    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    synth_calls: int = 0
    max_tokens: int | None = None
    plan_usage: Usage | None = None
    synth_usage: Usage | None = None
    retries: list[tuple[int, int, str]] = field(default_factory=list)
    fallback: str | None = None
    closed: bool = False
    follow_ups: list[list[str]] = field(default_factory=list)  # queries per later round
    follow_up_calls: list[tuple[list[str], list[str]]] = field(default_factory=list)
    plan_requests: list[PlanRequest] = field(default_factory=list)
    replans: list[list[str]] = field(default_factory=list)  # plans after review feedback

    async def plan(self, request: PlanRequest) -> Plan:
        self.plan_requests.append(request)
        if self.plan_usage is not None:
            request.report.usage(self.plan_usage)
        if request.feedback is not None and self.replans:
            return Plan(self.replans.pop(0)[: request.breadth])
        return Plan(self.queries[: request.breadth], fallback=self.fallback)

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        self.follow_up_calls.append((list(request.asked), [s.title for s in request.sources]))
        round_queries = self.follow_ups[len(self.follow_up_calls) - 1 :]
        return round_queries[0][: request.breadth] if round_queries else []

    async def synthesize(self, request: AnswerRequest) -> AsyncIterator[str]:
        report = request.report
        self.synth_calls += 1
        self.max_tokens = request.max_tokens
        for attempt, wait_ms, reason in self.retries:
            await report.retrying(attempt=attempt, wait_ms=wait_ms, reason=reason)
        finished = False
        try:
            for index, piece in enumerate(self.pieces):
                if self.hold_after is not None and index == self.hold_after:
                    self.holding.set()
                    await self.release.wait()
                if self.fail_with is not None and index == len(self.pieces) // 2:
                    raise LLMError(self.fail_with, provider=self.name)
                yield piece
                await asyncio.sleep(0)
            finished = True
        finally:
            self.closed = not finished
        if self.synth_usage is not None:
            report.usage(self.synth_usage)

    @property
    def answer(self) -> str:
        return "".join(self.pieces)


@dataclass
class ScriptedSearch:
    """Answers each query from a script: hits, an error message, or the default hits."""

    results: dict[str, list[SearchHit] | str] = field(default_factory=dict)
    name: str = "scripted"
    calls: list[str] = field(default_factory=list)

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        self.calls.append(query)
        outcome = self.results.get(query, default_hits(query))
        if isinstance(outcome, str):
            raise SearchError(outcome, provider=self.name)
        return outcome[:limit]


def default_hits(query: str, count: int = 2) -> list[SearchHit]:
    """Distinct hits for a query: one URL per query and rank."""
    return [
        SearchHit(
            title=f"{query} result {n}",
            url=f"https://example.org/{query.replace(' ', '-')}/{n}",
            snippet=f"What {query} says, part {n}.",
            score=1.0 / n,
        )
        for n in range(1, count + 1)
    ]


@dataclass
class RecordingReporter:
    """A Reporter that records what a provider told it: each retry as (attempt, wait_ms, reason)."""

    retries: list[tuple[int, int, str]] = field(default_factory=list)
    usages: list[tuple[Usage, bool]] = field(default_factory=list)

    async def retrying(self, *, attempt: int, wait_ms: int, reason: str) -> None:
        self.retries.append((attempt, wait_ms, reason))

    def usage(self, usage: Usage, *, estimated: bool = False) -> None:
        self.usages.append((usage, estimated))
