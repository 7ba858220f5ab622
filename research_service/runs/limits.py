"""A run's limits: its token budget and its whole-run deadline."""

from __future__ import annotations

import asyncio

from research_service.errors import PipelineError
from research_service.pipeline.context import RunContext
from research_service.pipeline.orchestrator import Pipeline


def token_budget(requested: int | None, ceiling: int | None) -> int | None:
    """The run's token budget: what it asked for, never above the server's ceiling."""
    if requested is None or ceiling is None:
        return requested if ceiling is None else ceiling
    return min(requested, ceiling)


async def run_within_deadline(pipeline: Pipeline, ctx: RunContext, deadline_s: float | None) -> str:
    """The pipeline's answer, or PipelineError `run_deadline` once `deadline_s` has passed."""
    deadline = asyncio.timeout(deadline_s)
    try:
        async with deadline:
            ctx.deadline = deadline
            result = await pipeline.run(ctx)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise PipelineError(
            f"the run took longer than its {deadline_s:g} s deadline; raise "
            "--run-deadline-s or ask for less (breadth, max_sources)",
            code="run_deadline",
            phase=ctx.phase or "planning",
        ) from None
    return result.text
