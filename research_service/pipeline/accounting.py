"""Token usage per stage, the run's token budget, and what providers report while they work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from research_service.events import Phase
from research_service.providers.base import Usage


@dataclass(slots=True)
class TokenAccount:
    """Usage by stage and the budget it is spent against.

    The budget caps the tokens the model *generates* in a run (planning and answer): that is
    what can be enforced live, token by token. Prompt tokens are reported, not budgeted.
    """

    budget: int | None = None
    by_stage: dict[str, Usage] = field(default_factory=dict)
    estimated: bool = False
    # Completion tokens counted from streamed pieces, until the server's own count arrives.
    live_completion: int = 0
    # The completion tokens of `by_stage`, summed as they are added (read once per token).
    reported_completion: int = 0

    def add(self, stage: str, usage: Usage, *, estimated: bool) -> None:
        """Record a call's usage for a stage."""
        self.by_stage[stage] = self.by_stage.get(stage, Usage()) + usage
        self.reported_completion += usage.completion_tokens
        self.estimated = self.estimated or estimated
        if stage == "synthesizing":
            self.live_completion = 0  # the reported count replaces the running estimate

    @property
    def generated(self) -> int:
        """Completion tokens so far, reported or counted live."""
        return self.reported_completion + self.live_completion

    def remaining(self) -> int | None:
        """Completion tokens the run may still generate (None: no budget)."""
        return None if self.budget is None else max(0, self.budget - self.generated)

    def summary(self) -> dict[str, Any]:
        """The `usage` object of the `done` event."""
        total = Usage()
        for usage in self.by_stage.values():
            total = total + usage
        live = Usage(0, self.live_completion)
        if self.live_completion:
            total = total + live
        return {
            "prompt_tokens": total.prompt_tokens,
            "completion_tokens": total.completion_tokens,
            "by_stage": {
                stage: {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
                for stage, u in self.by_stage.items()
            },
            "estimated": self.estimated or bool(self.live_completion),
            "budget": self.budget,
        }


class StageReporter:
    """A provider's channel to the run during one stage: retries become `progress` events."""

    def __init__(self, ctx: Any, stage: Phase) -> None:
        # `ctx` is the RunContext (typed loosely to keep this module free of an import cycle).
        self._ctx = ctx
        self._stage = stage

    async def retrying(self, *, attempt: int, wait_ms: int, reason: str) -> None:
        """Show listeners that a call failed and will be tried again."""
        if self._ctx.watchdog is not None:
            self._ctx.watchdog.restart(after_s=wait_ms / 1000)
        await self._ctx.phase_event(
            self._stage,
            "progress",
            retrying={"attempt": attempt, "wait_ms": wait_ms, "reason": reason},
        )

    def usage(self, usage: Usage, *, estimated: bool = False) -> None:
        """Add a call's usage to the stage."""
        self._ctx.tokens.add(self._stage, usage, estimated=estimated)
