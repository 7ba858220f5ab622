"""Planning: ask the model which search queries cover the question."""

from __future__ import annotations

from research_service.pipeline.context import RunContext
from research_service.providers.base import LLMProvider, PlanRequest


def clean_queries(queries: list[str], *, breadth: int, fallback: str) -> list[str]:
    """Strip, de-duplicate (case-insensitively) and cap the planned queries; never empty."""
    seen: set[str] = set()
    result: list[str] = []
    for query in queries:
        text = " ".join(query.split())
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            result.append(text)
    return result[:breadth] or [" ".join(fallback.split())]


async def plan(ctx: RunContext, llm: LLMProvider) -> list[str]:
    """Run the planning phase and return the queries to search."""
    await ctx.phase_event("planning", "started")
    request = PlanRequest(
        question=ctx.question, breadth=ctx.options.breadth, report=ctx.reporter("planning")
    )
    planned = await llm.plan(request)
    queries = clean_queries(planned.queries, breadth=ctx.options.breadth, fallback=ctx.question)
    extra = {} if planned.fallback is None else {"fallback": planned.fallback}
    await ctx.phase_event("planning", "completed", queries=queries, **extra)
    return queries
