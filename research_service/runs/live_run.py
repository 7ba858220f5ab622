"""A run executing in this process: its task, state, listeners and live fan-out."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from research_service.events import Event, writable
from research_service.pipeline.context import RunContext
from research_service.runs.hub import Hub
from research_service.runs.models import RunRecord
from research_service.runs.state import RunState

log = logging.getLogger(__name__)


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

    def next_event(
        self, name: str, data: dict[str, Any], *, t_ms: int
    ) -> tuple[Event, dict[str, Any]]:
        """The run's next event, and the data it carries.

        Text no event can carry (a lone surrogate, from a model or a page, that slipped past
        its provider) becomes U+FFFD: the run must still end with a `done` listeners can read.
        """
        seq = self.state.event_count + 1
        try:
            return Event.create(self.record.id, seq, name, data, t_ms=t_ms), data
        except UnicodeEncodeError:
            log.warning("run %s: its %s event held text that is not Unicode", self.record.id, name)
            data = writable(data)
            return Event.create(self.record.id, seq, name, data, t_ms=t_ms), data

    def cancel(self, *, code: str, message: str) -> bool:
        """Stop the run's task promptly, for `code`; False when it had already finished."""
        if self.task is None or self.task.done():
            return False
        if self.cancel_reason is None:
            self.cancel_reason = (code, message or "the run was cancelled on request")
            self.task.cancel()
        return True
