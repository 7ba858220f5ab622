"""Run creations that finish even when the request that began them goes away.

aiohttp cancels a handler whose client disconnects. Cancelled between storing a run and
starting it, a creation would leave the run stored and never started: `queued` forever,
never abandoned, not even cancellable. The store's insert may commit after the cancel, too.
So each creation runs in a task of its own that the caller only waits for.

A run stored while others are being created waits for them before its pipeline starts
(`settled`, for at most `START_AFTER_CREATIONS_S`). On one core, a burst's runs would otherwise
take turns with the burst's answers: the last of 300 `POST /v1/runs` at once was answered
7-10 ms later (bench/README.md, "Answers before runs").
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._none_pending = asyncio.Event()
        self._none_pending.set()

    async def settled(self, timeout: float) -> None:
        """Return once no creation is in progress, or after `timeout` seconds."""
        if not self.pending:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._none_pending.wait()

    async def finish(self, creation: Coroutine[Any, Any, RunRecord]) -> RunRecord:
        """The run `creation` makes; if the caller is cancelled, `creation` still goes on."""
        task = asyncio.create_task(creation, name="create-run")
        self.pending.add(task)  # the loop keeps only a weak reference to a task
        self._none_pending.clear()
        task.add_done_callback(self._finished)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_report_unheard)
            raise

    def _finished(self, task: asyncio.Task[RunRecord]) -> None:
        self.pending.discard(task)
        if not self.pending:
            self._none_pending.set()


def _report_unheard(task: asyncio.Task[RunRecord]) -> None:
    """Log the failure of a creation whose caller had gone (nobody else hears of it)."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, StoreUnavailable):
        log.warning("a run was not created (its request had gone): %s", exc)
    elif exc is not None:
        log.error("a run was not created (its request had gone)", exc_info=exc)
