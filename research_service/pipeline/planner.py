"""Planning: ask the model which search queries cover the question."""

from __future__ import annotations

import time
from typing import Any

from research_service.pipeline.context import RunContext
from research_service.pipeline.review import MAX_REVIEW_ROUNDS, Decision
from research_service.providers.base import LLMProvider, PlanRequest
from research_service.records import iso_time


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
    """Run the planning phase (with its review, if the run asked for one); the queries."""
    await ctx.phase_event("planning", "started")
    queries, extra = await _plan_once(ctx, llm)
    if ctx.options.review_plan:
        queries, extra = await _review(ctx, llm, queries, extra)
    await ctx.phase_event("planning", "completed", queries=queries, **extra)
    return queries


async def _plan_once(
    ctx: RunContext, llm: LLMProvider, *, previous: list[str] | None = None, feedback: str = ""
) -> tuple[list[str], dict[str, Any]]:
    request = PlanRequest(
        question=ctx.question,
        breadth=ctx.options.breadth,
        report=ctx.reporter("planning"),
        previous=tuple(previous or ()),
        feedback=feedback or None,
    )
    planned = await llm.plan(request)
    queries = clean_queries(planned.queries, breadth=ctx.options.breadth, fallback=ctx.question)
    return queries, ({} if planned.fallback is None else {"fallback": planned.fallback})


async def _review(
    ctx: RunContext, llm: LLMProvider, queries: list[str], extra: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """Show the plan and wait for its review, round after round.

    The queries to search, and what `planning` `completed` adds: the review's outcome and
    the `fallback` of the plan that is searched, if it is one.
    """
    timeout = ctx.review_timeout_s
    round_number = 1
    while True:
        ctx.review.open(round_number)
        await ctx.phase_event(
            "planning",
            "review",
            queries=queries,
            round=round_number,
            review_url=ctx.review_url,
            expires_in_s=int(timeout) if float(timeout).is_integer() else timeout,
            # Absolute too: a listener who joins later, or a replay, can still count down.
            expires_at=iso_time(time.time() + timeout),
            feedback_allowed=round_number < MAX_REVIEW_ROUNDS,
            **extra,
        )
        decision = await _wait_for_decision(ctx, timeout)
        if decision is None:
            return queries, {**extra, "review": "timed_out"}
        await ctx.phase_event("planning", "reviewed", **decision.event_data(round_number))
        if decision.queries is not None:  # the reviewer's own queries: no fallback
            return list(decision.queries), {"review": decision.kind}
        if decision.feedback is None:
            return queries, {**extra, "review": decision.kind}
        queries, extra = await _plan_once(ctx, llm, previous=queries, feedback=decision.feedback)
        round_number += 1


async def _wait_for_decision(ctx: RunContext, timeout: float) -> Decision | None:
    """The open round's decision, or None at the timeout.

    The wait is not counted against the run's deadline: it is moved out for the longest wait
    first, then back by what the wait did not use.
    """
    deadline = ctx.deadline
    when = None if deadline is None else deadline.when()
    if deadline is not None and when is not None:
        deadline.reschedule(when + timeout)
    decision, waited = await ctx.review.wait(timeout=timeout)
    if deadline is not None and when is not None:
        deadline.reschedule(when + waited)
    return decision
