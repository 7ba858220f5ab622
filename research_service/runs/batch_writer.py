"""The durable stores' write-behind queue: batches, durability waits, a bounded backlog, health.

The SQLite and PostgreSQL stores share it; each says how a batch is written and what a failed
write means (`BatchWriter._write`, `BatchWriter._unavailable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Final

from research_service.errors import StoreUnavailable
from research_service.runs.run_memory import Row

log = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL_S: Final = 0.05
DEFAULT_FLUSH_MAX_EVENTS: Final = 5000
#: Events waiting for the store beyond this many bytes make appends wait (the runs, never
#: the event loop): a store that cannot write holds a bounded backlog in memory.
DEFAULT_MAX_PENDING_BYTES: Final = 32 * 1024 * 1024
RETRY_DELAY_S: Final = 1.0


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class BatchWriter(ABC):
    """Queues appended events and commits them in batches.

    A batch is written every `flush_interval_s`, at `flush_max_events` queued events, or at
    once when `urgent`. A failed batch stays queued and is retried every RETRY_DELAY_S;
    `durable()` waits through such failures until the events are written (or the writer
    closes), so what it promises is stored. Whether the store takes writes is `failure`,
    and each change of it is logged once, in one line.
    """

    #: What a failed write raises (expected: the store is down, full, read-only).
    errors: tuple[type[BaseException], ...] = ()

    def __init__(
        self,
        *,
        name: str,
        on_written: Callable[[list[Row]], None] | None = None,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_max_events: int = DEFAULT_FLUSH_MAX_EVENTS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self.name = name
        self._on_written = on_written
        self._flush_interval_s = flush_interval_s
        self._flush_max_events = flush_max_events
        self._max_pending_bytes = max_pending_bytes
        self._pending: list[Row] = []
        self._pending_bytes = 0
        self.queued_total = 0
        self.written_total = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._room: asyncio.Future[None] | None = None
        self._queued = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.failure: StoreUnavailable | None = None

    @abstractmethod
    async def _write(self, batch: list[Row]) -> None:
        """Commit `batch` (raising one of `errors` when the store cannot)."""

    @abstractmethod
    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        """What a request gets when a write failed with `exc`."""

    @property
    def backlogged(self) -> bool:
        """True while the events waiting for the store are over their bound."""
        return self._pending_bytes > self._max_pending_bytes

    @property
    def unwritten(self) -> int:
        """How many queued events are not yet committed."""
        return self.queued_total - self.written_total

    def queue(self, row: Row, *, urgent: bool = False) -> None:
        """Queue one event for the next batch."""
        pending = self._pending
        pending.append(row)
        self._pending_bytes += len(row[4])
        self.queued_total += 1
        self._queued.set()
        if urgent or len(pending) >= self._flush_max_events:
            self._urgent.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=f"writer {self.name}")

    async def room(self) -> None:
        """Wait while the backlog is over its bound (the store is not keeping up)."""
        while self._pending_bytes > self._max_pending_bytes and not self._closed:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._room)

    async def durable(self, *, urgent: bool) -> None:
        """Wait until every event queued so far is committed; StoreUnavailable if it never is.

        `urgent` writes the queue now; otherwise the writer keeps its own pace.
        """
        target = self.queued_total
        if self.written_total >= target:
            return
        if self._closed:
            raise self._lost()
        if urgent:
            self._urgent.set()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    async def close(self, *, timeout: float) -> None:
        """Write what is queued, trying for at most `timeout` s, then stop the writer."""
        with contextlib.suppress(TimeoutError, StoreUnavailable):
            async with asyncio.timeout(timeout):
                await self.durable(urgent=True)
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.unwritten:
            log.warning(
                "%d events could not be written to %s before it closed; runs without their "
                "done end as interrupted at the next start",
                self.unwritten,
                self.name,
            )
        error = self._lost()
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters = []
        if self._room is not None:
            _resolve(self._room)

    def failed(self, exc: BaseException) -> StoreUnavailable:
        """A write failed: `failure` says so; the first failure of a spell is logged."""
        error = self._unavailable(exc)
        if self.failure is None:
            log.warning(
                "%s: the run store stopped taking writes; %d events wait in memory, new runs "
                "are refused (503) until it recovers",
                error.detail,
                self.unwritten,
            )
        self.failure = error
        return error

    def succeeded(self) -> None:
        """A write succeeded: with nothing left unwritten, a failing spell is over."""
        if self.failure is not None and not self.unwritten:
            self.failure = None
            log.warning("the run store %s takes writes again", self.name)

    def _lost(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"the run store {self.name} closed before its events were written",
            slug="store-closed",
            retry_after=1,
        )

    async def _loop(self) -> None:
        while True:
            await self._queued.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval_s):
                        await self._urgent.wait()
            # A copy: the queue stays the truth (and grows) while the batch is written.
            batch = self._pending[:]
            self._queued.clear()
            self._urgent.clear()
            try:
                await self._write(batch)
            except self.errors as exc:
                # Expected while the store is down or full: one line when it starts, then
                # quiet retries.
                self.failed(exc)
                self._queued.set()
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self._committed(batch)

    def _committed(self, batch: list[Row]) -> None:
        # Events queued while the batch was written follow it in the same list.
        del self._pending[: len(batch)]
        self._pending_bytes -= sum(len(row[4]) for row in batch)
        self.written_total += len(batch)
        self.succeeded()
        if self._on_written is not None:
            self._on_written(batch)
        still_waiting = []
        for target, future in self._waiters:
            if target <= self.written_total:
                _resolve(future)
            elif not future.done():
                still_waiting.append((target, future))
        self._waiters = still_waiting
        if self._room is not None and self._pending_bytes <= self._max_pending_bytes:
            _resolve(self._room)
