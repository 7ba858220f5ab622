"""What a pipeline stage gets from its run: the question, options and an event sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from research_service.defaults import DEFAULT_REVIEW_TIMEOUT_S
from research_service.events import Phase
from research_service.pipeline.accounting import StageReporter, TokenAccount
from research_service.pipeline.review import ReviewGate
from research_service.pipeline.watchdog import StreamWatchdog
from research_service.providers.base import Source
from research_service.records import RunOptions

EmitFn = Callable[[str, dict[str, Any]], Awaitable[None]]


class RunContext:
    """The run as a pipeline sees it: it reads the question and only emits events."""

    def __init__(
        self,
        *,
        question: str,
        options: RunOptions,
        emit: EmitFn,
        budget: int | None = None,
        review_timeout_s: float = DEFAULT_REVIEW_TIMEOUT_S,
        review_url: str = "",
    ) -> None:
        self.question = question
        self.options = options
        #: Append one event to the run's log (called once per token: kept a plain attribute).
        self.emit = emit
        # The run's clock starts at its first event, whatever came before it (the task's
        # start, a busy loop): that event always says `elapsed_ms` 0, and `t_ms` 0.
        self._started: float | None = None
        self.phase: Phase | None = None
        # Sources found so far, so a run cut short can still report them in `done`.
        self.sources: list[Source] = []
        self.tokens = TokenAccount(budget=budget)
        self.truncated = False
        # The synthesis stream's timeouts, while it runs (retries restart its clock).
        self.watchdog: StreamWatchdog | None = None
        # Plan review (options.review_plan): where the decision arrives, how long it may take.
        self.review = ReviewGate()
        self.review_timeout_s = review_timeout_s
        self.review_url = review_url
        #: The whole-run deadline, while the pipeline runs under one (waits for a review
        #: move it out: they do not count against it).
        self.deadline: asyncio.Timeout | None = None

    def elapsed_ms(self) -> int:
        """Milliseconds since the run's first event; the first call starts the clock."""
        now = time.monotonic()
        if self._started is None:
            self._started = now
        return int((now - self._started) * 1000)

    def reporter(self, stage: Phase) -> StageReporter:
        """The channel a provider reports retries and usage through during `stage`."""
        return StageReporter(self, stage)

    async def phase_event(self, phase: Phase, status: str, **extra: Any) -> None:
        """Emit a `phase` event; `started` also makes `phase` the current one."""
        if status == "started":
            self.phase = phase
        await self.emit(
            "phase", {"phase": phase, "status": status, "elapsed_ms": self.elapsed_ms(), **extra}
        )
