"""Run creations that finish even when the request that began them goes away.

aiohttp cancels a handler whose client disconnects. Cancelled between storing a run and
starting it, a creation would leave the run stored and never started: `queued` forever,
never abandoned, not even cancellable. The store's insert may commit after the cancel, too.
So each creation runs in a task of its own that the caller only waits for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias

from research_service.errors import StoreUnavailable
from research_service.records import RunRecord

log = logging.getLogger(__name__)

#: What a run's creation also owes once the run is stored (its webhooks): done as part of it.
AfterCreate: TypeAlias = Callable[[RunRecord], Awaitable[None]]


class Creations:
    """The creations in progress, each finished whether or not its caller still waits."""

    def __init__(self) -> None:
        self.pending: set[asyncio.Task[RunRecord]] = set()

    async def finish(self, creation: Coroutine[Any, Any, RunRecord]) -> RunRecord:
        """The run `creation` makes; if the caller is cancelled, `creation` still goes on."""
        task = asyncio.create_task(creation, name="create-run")
        self.pending.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self.pending.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_report_unheard)
            raise


def _report_unheard(task: asyncio.Task[RunRecord]) -> None:
    """Log the failure of a creation whose caller had gone (nobody else hears of it)."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, StoreUnavailable):
        log.warning("a run was not created (its request had gone): %s", exc)
    elif exc is not None:
        log.error("a run was not created (its request had gone)", exc_info=exc)
