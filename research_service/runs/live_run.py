"""A run executing in this process: its task, state, listeners and live fan-out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from research_service.events import Event, writable
from research_service.pipeline.context import RunContext
from research_service.runs.hub import Hub
from research_service.runs.models import RunRecord
from research_service.runs.state import RunState

log = logging.getLogger(__name__)

#: The cancel code of the service's shutdown (RunManager.shutdown writes it as a literal, as
#: every run ending's code is: tests/test_docs_match_code.py reads them from the source).
SHUTDOWN: Final = "shutdown"


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
    #: Set as the run's end begins: from then on it is not cancelled (see `cancel`).
    ending: bool = False

    #: Set when the service's shutdown cancels the run (whatever cancelled it before).
    stopping: bool = False

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
        """Stop the run's task promptly, for `code`; False when it had already finished.

        Also False once it is ending (its `done` being written): cancelling then would stop
        that write half done, and leave the run `running` to every listener for good. Only
        the service's shutdown stops it then (a `done` the disk does not take must not hold
        the process): the next start ends the run as its store has it.
        """
        if self.task is None or self.task.done():
            return False
        if code == SHUTDOWN:
            # Its end begun, or a cancel on its way: the shutdown's stops it all the same.
            self.stopping = True
            self.cancel_reason = self.cancel_reason or (code, message)
            self.task.cancel()
            return True
        if self.ending:
            return False
        if self.cancel_reason is None:
            self.cancel_reason = (code, message or "the run was cancelled on request")
            self.task.cancel()
        return True


async def uncancelled(work: Awaitable[None], *, unless: Callable[[], bool]) -> None:
    """Await `work` to its end, whatever cancel came for the task just before it began.

    A run's `done` stopped half written (on its way to the disk, not yet given to listeners)
    left the run `running` for good. `LiveRun.cancel` refuses once the run ends; this covers a
    cancel asked for just before, which asyncio delivers at the next await. Unless `unless()`
    says the cancel is to be taken (the shutdown's): `work` is then left to end by itself.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if unless():
            task.add_done_callback(_retrieved)
            raise
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        await task


def _retrieved(task: asyncio.Future[None]) -> None:
    """Take a left task's outcome (its store closed under it): nobody waits for it any more."""
    if not task.cancelled():
        task.exception()
