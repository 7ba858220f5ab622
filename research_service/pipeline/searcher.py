"""Searching: run the planned queries concurrently and keep the distinct sources."""

from __future__ import annotations

import asyncio
import logging

from research_service.errors import PipelineError, ProviderError
from research_service.pipeline.context import RunContext
from research_service.providers.base import SearchHit, SearchProvider, Source

log = logging.getLogger(__name__)


class SourceRegistry:
    """Numbers sources in the order they are found, once per URL, up to a cap.

    Each finished query gets a fair share of the slots still free (free slots divided by
    queries still to come, rounded up), so the first query to finish cannot take them all
    and a query that found little leaves its share to the later ones.
    """

    def __init__(self, *, limit: int, queries: int, sources: list[Source]) -> None:
        self.limit = limit
        self.queries_left = queries
        self.sources = sources
        self._urls: set[str] = set()

    def add(self, hits: list[SearchHit]) -> list[Source]:
        """Register a finished query's hits, best first; return the sources they added."""
        free = self.limit - len(self.sources)
        share = -(-free // max(self.queries_left, 1))
        self.queries_left -= 1
        added: list[Source] = []
        for hit in hits:
            if len(added) >= share:
                break
            if hit.url in self._urls:
                continue
            self._urls.add(hit.url)
            source = Source(len(self.sources) + 1, hit.title, hit.url, hit.snippet)
            self.sources.append(source)
            added.append(source)
        return added


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


async def search_all(
    ctx: RunContext,
    search: SearchProvider,
    queries: list[str],
    *,
    concurrency: int,
    timeout: float,
) -> list[Source]:
    """Run the searching phase; each finished query emits a `progress` event."""
    await ctx.phase_event("searching", "started", total=len(queries))
    registry = SourceRegistry(
        limit=ctx.options.max_sources, queries=len(queries), sources=ctx.sources
    )
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
    if failures == len(queries):
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
    await ctx.phase_event("searching", "completed", sources=len(registry.sources))
    return registry.sources
