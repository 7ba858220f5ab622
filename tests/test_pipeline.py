"""The pipeline on its own: fair source slots, bounded concurrent searches, query timeouts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from research_service.pipeline.context import RunContext
from research_service.pipeline.orchestrator import Pipeline
from research_service.providers.base import SearchHit
from research_service.runs.models import RunOptions
from tests.fakes import ScriptedLLM, ScriptedSearch, default_hits


def context(options: RunOptions) -> tuple[RunContext, list[tuple[str, dict[str, Any]]]]:
    emitted: list[tuple[str, dict[str, Any]]] = []

    async def emit(name: str, data: dict[str, Any]) -> None:
        emitted.append((name, data))

    return RunContext(question="q?", options=options, emit=emit), emitted


def progress(emitted: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [d for n, d in emitted if n == "phase" and d["status"] == "progress"]


async def test_every_query_gets_a_fair_share_of_source_slots() -> None:
    search = ScriptedSearch({q: default_hits(q, count=8) for q in ("a", "b", "c")})
    pipeline = Pipeline(
        llm=ScriptedLLM(queries=["a", "b", "c"]),
        search=search,
        search_concurrency=3,
        search_timeout_s=5,
    )
    ctx, emitted = context(RunOptions(breadth=3, max_sources=8))
    answer = await pipeline.run(ctx)
    shares = [len(p["sources"]) for p in progress(emitted)]
    assert shares == [3, 3, 2]
    assert [s.id for s in answer.sources] == list(range(1, 9))


async def test_a_query_that_finds_little_leaves_its_share_to_later_ones() -> None:
    search = ScriptedSearch({"a": default_hits("a", count=1), "b": default_hits("b", count=8)})
    pipeline = Pipeline(
        llm=ScriptedLLM(queries=["a", "b"]),
        search=search,
        search_concurrency=1,
        search_timeout_s=5,
    )
    ctx, emitted = context(RunOptions(breadth=2, max_sources=6))
    await pipeline.run(ctx)
    assert [len(p["sources"]) for p in progress(emitted)] == [1, 5]


class GatedSearch:
    """Holds every query until released, recording how many run at once."""

    name = "gated"

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started = asyncio.Condition()
        self.release = asyncio.Event()

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        async with self.started:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.notify_all()
        if query != "slow":
            await self.release.wait()
        else:
            await asyncio.Event().wait()  # never answers: the per-query timeout must end it
        self.running -= 1
        return default_hits(query)


async def test_searches_run_concurrently_within_the_limit() -> None:
    search = GatedSearch()
    queries = [f"q{n}" for n in range(6)]
    pipeline = Pipeline(
        llm=ScriptedLLM(queries=queries), search=search, search_concurrency=2, search_timeout_s=5
    )
    ctx, _ = context(RunOptions(breadth=6, max_sources=20))
    run = asyncio.create_task(pipeline.run(ctx))
    async with search.started, asyncio.timeout(5):
        await search.started.wait_for(lambda: search.running == 2)
    search.release.set()
    async with asyncio.timeout(5):
        await run
    assert search.most == 2


async def test_a_query_that_times_out_is_reported_and_the_run_goes_on() -> None:
    search = GatedSearch()
    search.release.set()
    pipeline = Pipeline(
        llm=ScriptedLLM(queries=["slow", "fast"]),
        search=search,
        search_concurrency=2,
        search_timeout_s=0.05,
    )
    ctx, emitted = context(RunOptions(breadth=2))
    answer = await pipeline.run(ctx)
    errors = {p["query"]: p.get("error") for p in progress(emitted)}
    assert errors["slow"] == "timed out after 0.05 s"
    assert errors["fast"] is None
    assert answer.sources


def test_sources_are_one_per_canonical_url_but_fragments_stay_distinct() -> None:
    from research_service.pipeline.sources import SourceRegistry
    from research_service.providers.base import SearchHit

    registry = SourceRegistry(limit=10, sources=[])
    registry.start_round(queries=1)
    added = registry.add(
        [
            SearchHit("a", "https://Example.org/page/?utm_source=x", "s"),
            SearchHit("b", "https://example.org/page", "s"),
            SearchHit("c", "https://docs.python.org/3/library/json.html#module-json", "s"),
            SearchHit("d", "https://docs.python.org/3/library/json.html#module-json.decoder", "s"),
        ]
    )
    assert [s.title for s in added] == ["a", "c", "d"]


def hold_the_loop(seconds: float) -> None:
    """Keep the event loop's thread busy, as other work on the loop would."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass


async def test_the_run_clock_starts_at_its_first_event_however_late_that_comes() -> None:
    ctx, emitted = context(RunOptions())
    hold_the_loop(0.03)  # between the run's start and its first event
    await ctx.phase_event("planning", "started")
    assert emitted == [("phase", {"phase": "planning", "status": "started", "elapsed_ms": 0})]
    hold_the_loop(0.02)
    await ctx.phase_event("planning", "completed")
    assert emitted[1][1]["elapsed_ms"] >= 20
