"""Searching: rounds of concurrent queries, follow-ups planned from what each round found."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from research_service.errors import PipelineError, ProviderError
from research_service.pipeline.context import RunContext
from research_service.pipeline.sources import SourceRegistry
from research_service.providers.base import SearchHit, SearchProvider

log = logging.getLogger(__name__)

#: Plans a round's queries from the round number and what the run has asked so far.
FollowUp = Callable[[int, list[str]], Awaitable[list[str]]]


async def _one(
    search: SearchProvider, query: str, *, limit: int, timeout: float, gate: asyncio.Semaphore
) -> tuple[str, list[SearchHit] | str]:
    async with gate:
        try:
            async with asyncio.timeout(timeout):
                return query, await search.search(query, limit=limit)
        except TimeoutError:
            return query, f"timed out after {timeout:g} s"
        except ProviderError as exc:
            log.warning("search for %r failed: %s", query, exc)
            return query, str(exc)


async def _round(
    ctx: RunContext,
    search: SearchProvider,
    queries: list[str],
    *,
    number: int,
    registry: SourceRegistry,
    concurrency: int,
    timeout: float,
) -> int:
    """Run one round's queries concurrently; return how many failed."""
    registry.start_round(queries=len(queries))
    gate = asyncio.Semaphore(concurrency)
    limit = ctx.options.max_sources
    pending = [
        asyncio.ensure_future(_one(search, q, limit=limit, timeout=timeout, gate=gate))
        for q in queries
    ]
    failures = 0
    try:
        for completed, next_done in enumerate(asyncio.as_completed(pending), start=1):
            query, outcome = await next_done
            progress: dict[str, object] = {"query": query, "completed": completed}
            progress["total"] = len(queries)
            progress["round"] = number
            if isinstance(outcome, str):
                failures += 1
                progress["error"] = outcome
                registry.add([])  # its share goes to the queries still running
            else:
                progress["sources"] = [s.brief() for s in registry.add(outcome)]
            await ctx.phase_event("searching", "progress", **progress)
    finally:
        for task in pending:
            task.cancel()
    return failures


async def search_all(
    ctx: RunContext,
    search: SearchProvider,
    queries: list[str],
    *,
    concurrency: int,
    timeout: float,
    follow_up: FollowUp | None = None,
) -> int:
    """Search `options.depth` rounds, each finished query a `progress` event; return rounds.

    Round 1 searches the plan. Each later round first asks `follow_up` for queries about
    what is still missing (announced as a `progress` event with `round` and `queries`);
    none means the research is complete. Each round may fill its share of `max_sources`.
    The caller emits `searching` `completed` (pages may still be read first).
    """
    depth = ctx.options.depth if follow_up is not None else 1
    registry = SourceRegistry(limit=ctx.options.max_sources, rounds=depth, sources=ctx.sources)
    await ctx.phase_event("searching", "started", total=len(queries), round=1)
    asked, failures, rounds = list(queries), 0, 0
    for number in range(1, depth + 1):
        if number > 1:
            assert follow_up is not None
            queries = [q for q in await follow_up(number, asked) if q not in asked]
            if not queries:
                break
            asked += queries
            await ctx.phase_event("searching", "progress", round=number, queries=queries)
        failures += await _round(
            ctx,
            search,
            queries,
            number=number,
            registry=registry,
            concurrency=concurrency,
            timeout=timeout,
        )
        rounds = number
    if failures == len(asked):
        raise PipelineError(
            "every search query failed; check the search provider and try again",
            code="search_failed",
            phase="searching",
        )
    if not registry.sources:
        raise PipelineError(
            "no source matched the question; rephrase it or point --corpus at documents "
            "that cover it",
            code="no_sources",
            phase="searching",
        )
    return rounds
