"""The pipeline's providers, counted for `GET /metrics`: calls, retries, errors and latency.

The app wraps its model and search provider once, when it assembles the pipeline; each
wrapper keeps the counts of its stages (`plan`, `follow_up`, `synthesize`, `search`) in the
process's Stats, found once, so a call costs a few increments and two clock reads. A model's
retries are counted as it reports them to the run (`Reporter.retrying`); a search provider
has no reporter, so its retry loop tells the call in progress through `note_retry`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable
from contextvars import ContextVar
from typing import TypeVar

from research_service.providers.base import (
    AnswerRequest,
    FollowUpRequest,
    LLMProvider,
    Plan,
    PlanRequest,
    Reporter,
    SearchHit,
    SearchProvider,
    Usage,
)
from research_service.stats import CallStats, Stats

R = TypeVar("R", PlanRequest, FollowUpRequest, AnswerRequest)
T = TypeVar("T")

#: The counts of the search call running in this task, for its retry loop.
_SEARCH_CALL: ContextVar[CallStats | None] = ContextVar("search_call", default=None)


def note_retry() -> None:
    """Count a retry of the search call in progress, if it is counted (the retry loop's hook)."""
    counts = _SEARCH_CALL.get()
    if counts is not None:
        counts.retries += 1


class _CountingReporter:
    """Passes a provider's reports on to the run, counting its retries."""

    __slots__ = ("_counts", "_inner")

    def __init__(self, inner: Reporter, counts: CallStats) -> None:
        self._inner = inner
        self._counts = counts

    async def retrying(self, *, attempt: int, wait_ms: int, reason: str) -> None:
        """Count the retry, then show it to the run's listeners."""
        self._counts.retries += 1
        await self._inner.retrying(attempt=attempt, wait_ms=wait_ms, reason=reason)

    def usage(self, usage: Usage, *, estimated: bool = False) -> None:
        """Add a call's usage to the stage."""
        self._inner.usage(usage, estimated=estimated)


def _counting(request: R, counts: CallStats) -> R:
    """`request`, its retries counted in `counts`."""
    return dataclasses.replace(request, report=_CountingReporter(request.report, counts))


async def _timed(counts: CallStats, call: Awaitable[T]) -> T:
    """Await one call, counting it, its failure and how long it took.

    A call cut short (the run was cancelled, a timeout around it fired) is counted as a call
    only: it neither failed nor ended.
    """
    counts.calls += 1
    started = time.monotonic()
    try:
        result = await call
    except Exception:
        counts.errors += 1
        counts.seconds.observe(time.monotonic() - started)
        raise
    counts.seconds.observe(time.monotonic() - started)
    return result


class CountedLLM:
    """A language model whose calls are counted in `stats`, by stage."""

    def __init__(self, inner: LLMProvider, stats: Stats) -> None:
        self.inner = inner
        self.name = inner.name
        self._plan = stats.calls(inner.name, "plan")
        self._follow_up = stats.calls(inner.name, "follow_up")
        self._synthesize = stats.calls(inner.name, "synthesize", streamed=True)

    async def plan(self, request: PlanRequest) -> Plan:
        """The inner model's plan, counted."""
        return await _timed(self._plan, self.inner.plan(_counting(request, self._plan)))

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        """The inner model's follow-up queries, counted."""
        counted = _counting(request, self._follow_up)
        return await _timed(self._follow_up, self.inner.follow_up(counted))

    async def synthesize(self, request: AnswerRequest) -> AsyncIterator[str]:
        """The inner model's answer, timed to its first piece and to its end.

        Closing this stream closes the inner one at once (the model stops generating).
        """
        counts = self._synthesize
        first_token = counts.first_token
        assert first_token is not None
        counts.calls += 1
        started = time.monotonic()
        stream = self.inner.synthesize(_counting(request, counts))
        try:
            async for piece in stream:
                if piece:
                    first_token.observe(time.monotonic() - started)
                yield piece
                if piece:
                    break
            async for piece in stream:  # the rest, with nothing left to time on the way
                yield piece
        except Exception:
            counts.errors += 1
            counts.seconds.observe(time.monotonic() - started)
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        counts.seconds.observe(time.monotonic() - started)


class CountedSearch:
    """A search provider whose calls are counted in `stats`."""

    def __init__(self, inner: SearchProvider, stats: Stats) -> None:
        self.inner = inner
        self.name = inner.name
        self._search = stats.calls(inner.name, "search")

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """The inner provider's hits, counted (its retries too)."""
        token = _SEARCH_CALL.set(self._search)
        try:
            return await _timed(self._search, self.inner.search(query, limit=limit))
        finally:
            _SEARCH_CALL.reset(token)
