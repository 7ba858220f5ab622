"""A run's limits: the runs active at once, its token budget and its whole-run deadline."""

from __future__ import annotations

import asyncio
from typing import Final

from research_service.errors import PipelineError, TooManyRuns
from research_service.pipeline.context import RunContext
from research_service.pipeline.orchestrator import Pipeline
from research_service.runs.models import RunRecord

#: How long a client refused for too many active runs is told to wait, in seconds.
RETRY_AFTER_S: Final = 5


def runs(count: int) -> str:
    """`count` runs, in words: "1 run", "2 runs"."""
    return f"{count} run" if count == 1 else f"{count} runs"


def are_active(count: int) -> str:
    """`count` runs and whether they are active, in words: "1 run is active"."""
    return f"{runs(count)} {'is' if count == 1 else 'are'} active"


def check_room(active: int, limit: int) -> None:
    """Raise TooManyRuns when `active` runs already reach the `limit`."""
    if active >= limit:
        raise TooManyRuns(
            f"{are_active(active)}, the limit is {limit}; retry in {RETRY_AFTER_S} s",
            retry_after=RETRY_AFTER_S,
        )


def owner_full(owner: str, active: int, *, where: str = "") -> TooManyRuns:
    """The refusal of a run to `owner`, who has `active` runs, the most allowed."""
    return TooManyRuns(
        f"{owner!r} has {runs(active)} active{where}, the most one API key's owner may "
        f"have (--max-active-runs-per-owner); let one finish or cancel one "
        f"(POST /v1/runs/{{id}}/cancel), or retry in {RETRY_AFTER_S} s",
        retry_after=RETRY_AFTER_S,
    )


class OwnerSlots:
    """Each owner's runs active or being created here, within --max-active-runs-per-owner.

    An owner is an API key's name (`--auth keys`); runs without one (auth off) and a cap of
    None are never counted. A run holds its owner's slot from its creation's check (before
    any await, as the service-wide slot) until it ends.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._held: dict[str, set[str]] = {}

    def take(self, record: RunRecord) -> None:
        """Count `record` for its owner; TooManyRuns when the owner's runs reach the limit."""
        owner = record.owner
        if self.limit is None or owner is None:
            return
        held = self._held.setdefault(owner, set())
        if len(held) >= self.limit:
            raise owner_full(owner, len(held))
        held.add(record.id)

    def release(self, record: RunRecord) -> None:
        """The run ended (or was never stored): its owner's slot is free."""
        owner = record.owner
        held = None if owner is None else self._held.get(owner)
        if owner is not None and held is not None:
            held.discard(record.id)
            if not held:
                del self._held[owner]


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
