"""The PostgreSQL store's write-behind queue: batches, durability waits, a bounded backlog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final, TypeAlias

import asyncpg

from research_service.errors import StoreUnavailable
from research_service.runs.postgres_db import ERRORS, DatabaseError, unavailable

log = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL_S: Final = 0.05
DEFAULT_FLUSH_MAX_EVENTS: Final = 500
#: Events waiting for the database beyond this many bytes make appends wait until written.
DEFAULT_MAX_PENDING_BYTES: Final = 32 * 1024 * 1024
RETRY_DELAY_S: Final = 1.0

# Exact tuples (run_id, seq, name, t_ms, wire): the column order of `events`.
Row: TypeAlias = tuple[str, int, str, int, bytes]
_INSERT: Final = (
    "INSERT INTO events (run_id, seq, name, t_ms, wire) VALUES ($1, $2, $3, $4, $5) "
    # A batch whose commit succeeded but whose answer was lost is retried: already there.
    "ON CONFLICT DO NOTHING"
)


class EventWriter:
    """Queues appended events and commits them in batches, one transaction each.

    A batch is written every `flush_interval_s`, at `flush_max_events` queued events, or at
    once when urgent. A failed batch stays queued and is retried every RETRY_DELAY_S;
    `durable()` waits through such failures until the events are committed (or the writer
    closes), so what it promises is in the database.
    """

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_max_events: int = DEFAULT_FLUSH_MAX_EVENTS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self._pool = pool
        self._flush_interval_s = flush_interval_s
        self._flush_max_events = flush_max_events
        self._max_pending_bytes = max_pending_bytes
        self._pending: list[Row] = []
        self._pending_bytes = 0
        self._queued_total = 0
        self._written_total = 0
        self._durable: list[tuple[int, asyncio.Future[None]]] = []
        self._queued = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failure: StoreUnavailable | None = None
        self._closed = False

    @property
    def backlogged(self) -> bool:
        """True while the events waiting for the database are over their bound."""
        return self._pending_bytes > self._max_pending_bytes

    @property
    def unwritten(self) -> int:
        """How many queued events are not yet committed."""
        return self._queued_total - self._written_total

    def queue(self, row: Row, *, urgent: bool = False) -> None:
        """Queue one event for the next batch."""
        self._pending.append(row)
        self._pending_bytes += len(row[4])
        self._queued_total += 1
        self._queued.set()
        if urgent or len(self._pending) >= self._flush_max_events:
            self._urgent.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="postgres-writer")

    async def durable(self, *, urgent: bool) -> None:
        """Wait until every event queued so far is committed; StoreUnavailable if it never is."""
        target = self._queued_total
        if self._written_total >= target:
            return
        if self._closed:
            raise self._lost()
        if urgent:
            self._urgent.set()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durable.append((target, future))
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
                "%d events could not be written to PostgreSQL before the store closed; runs "
                "without their done end as interrupted at the next start",
                self.unwritten,
            )
        for _, future in self._durable:
            if not future.done():
                future.set_exception(self._lost())
        self._durable = []

    def failed(self, exc: DatabaseError) -> StoreUnavailable:
        """A write failed: the store's health says so; the first failure of a spell is logged."""
        error = unavailable(exc)
        if self.failure is None:
            log.warning(
                "%s: the run store stopped taking writes; %d events wait in memory",
                error.detail,
                len(self._pending),
            )
        self.failure = error
        return error

    def succeeded(self) -> None:
        """A write succeeded: with nothing left unwritten, a failing spell is over."""
        if self.failure is not None and not self._pending:
            self.failure = None
            log.warning("the PostgreSQL run store takes writes again")

    def _lost(self) -> StoreUnavailable:
        return StoreUnavailable(
            "the PostgreSQL run store closed before its events were written",
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
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.executemany(_INSERT, batch)
            except ERRORS as exc:
                # Expected while the server is down: one line when it starts, then retries.
                self.failed(exc)
                self._queued.set()
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self._committed(batch)

    def _committed(self, batch: list[Row]) -> None:
        # Events queued while the batch was written follow it in the same list.
        del self._pending[: len(batch)]
        self._pending_bytes -= sum(len(row[4]) for row in batch)
        self._written_total += len(batch)
        self.succeeded()
        waiting = []
        for target, future in self._durable:
            if target <= self._written_total:
                if not future.done():
                    future.set_result(None)
            elif not future.done():
                waiting.append((target, future))
        self._durable = waiting
