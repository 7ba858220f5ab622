"""A search engine that answers every query after a fixed delay, and one timed searching phase."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

from research_service.pipeline.context import RunContext
from research_service.pipeline.searcher import search_all
from research_service.providers.base import SearchHit
from research_service.runs.models import RunOptions

LATENCY_S: Final = 0.3


class SlowSearch:
    """A `SearchProvider` that takes `latency_s` per query and counts queries in flight."""

    name: str = "slow-fake"

    def __init__(self, latency_s: float = LATENCY_S) -> None:
        self.latency_s = latency_s
        self.in_flight = 0
        self.max_in_flight = 0

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """One hit per query, after the engine's latency."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency_s)  # the engine's think time, not a test wait
        finally:
            self.in_flight -= 1
        slug = query.replace(" ", "-")
        return [SearchHit(title=query, url=f"https://engine.invalid/{slug}", snippet=query)][:limit]


@dataclass(frozen=True, slots=True)
class PhaseRun:
    """One searching phase: its wall time, the queries answered, and the most run at once."""

    wall_s: float
    answered: int
    max_in_flight: int


async def searching_phase(
    queries: int, *, concurrency: int, timeout_s: float, latency_s: float = LATENCY_S
) -> PhaseRun:
    """Run `search_all` (the pipeline's searching phase) over `queries` distinct queries."""
    events: list[tuple[str, dict[str, Any]]] = []

    async def emit(kind: str, data: dict[str, Any]) -> None:
        events.append((kind, data))

    options = RunOptions(max_sources=20)
    ctx = RunContext(question="bench question", options=options, emit=emit)
    engine = SlowSearch(latency_s)
    asked = [f"bench query {n}" for n in range(queries)]
    started = time.perf_counter()
    await search_all(ctx, engine, asked, concurrency=concurrency, timeout=timeout_s)
    wall = time.perf_counter() - started
    answered = sum(
        1
        for kind, data in events
        if kind == "phase" and data.get("status") == "progress" and "sources" in data
    )
    if answered != queries:
        raise RuntimeError(f"{queries} queries asked, {answered} answered: {events}")
    return PhaseRun(wall, answered, engine.max_in_flight)
