"""A run executing in this process: its task, state, listeners and live fan-out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from research_service.pipeline.context import RunContext
from research_service.runs.hub import Hub
from research_service.runs.models import RunRecord
from research_service.runs.state import RunState


@dataclass(slots=True)
class LiveRun:
    """A run executing in this process."""

    record: RunRecord
    state: RunState = field(default_factory=RunState)
    task: asyncio.Task[None] | None = None
    context: RunContext | None = None
    listeners: int = 0
    abandon_timer: asyncio.TimerHandle | None = None
    cancel_reason: tuple[str, str] | None = None
    hub: Hub = field(default_factory=Hub)
    #: In a cluster, the check of other processes' listeners before abandoning the run.
    abandon_check: asyncio.Task[None] | None = None

    def cancel(self, *, code: str, message: str) -> bool:
        """Stop the run's task promptly, for `code`; False when it had already finished."""
        if self.task is None or self.task.done():
            return False
        if self.cancel_reason is None:
            self.cancel_reason = (code, message or "the run was cancelled on request")
            self.task.cancel()
        return True
