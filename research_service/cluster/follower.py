"""Follows runs that execute in another process: history from PostgreSQL, live tail from Redis.

One follower per run per process, however many listeners: it holds the run's events in
memory, wakes readers and hands each new event to the run's hub, as a local run does. The
seam between the two sources is exact: a follower only ever appends the event after its
last one, reading PostgreSQL whenever the Redis window does not have it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import redis.asyncio as aioredis

from research_service.cluster.publisher import entry_id, row_of
from research_service.cluster.redis_link import ERRORS, Keys
from research_service.cluster.tasks import stop
from research_service.errors import StoreUnavailable
from research_service.events import Event
from research_service.runs.hub import Hub
from research_service.runs.models import RunRecord, RunTail
from research_service.runs.run_memory import Row
from research_service.runs.waiters import Waiters

log = logging.getLogger(__name__)

#: How long one blocking read of the live window waits; between two, the follower checks
#: PostgreSQL too (a window lost with a Redis restart never stalls a follower for longer).
BLOCK_MS: Final = 1000
#: Entries read per round trip.
READ_COUNT: Final = 1000
#: While Redis does not answer, PostgreSQL is read this often instead.
POLL_S: Final = 0.25
#: A follower nobody reads from for this long stops (its events stay in PostgreSQL).
IDLE_S: Final = 30.0
#: Reads PostgreSQL: the run's committed events with seq > `after`; None if the run is gone.
StoredEvents = Callable[[str, int], Awaitable[list[Row] | None]]
#: Reads PostgreSQL: the run's stored tail (event count, ending); None if the run is gone.
StoredTail = Callable[[str], Awaitable[RunTail | None]]


def _same(ours: Row, stored: Row) -> bool:
    """Whether the store's event is the one this node has (the same seq, name and bytes)."""
    return ours[1:3] == stored[1:3] and bytes(ours[4]) == bytes(stored[4])


class Follower:
    """One run executing elsewhere, as far as this process has its events."""

    def __init__(self, run_id: str, events: list[Row], *, waiters: Waiters) -> None:
        self.run_id = run_id
        self.events = events
        self.hub = Hub()
        self.hub.last_seq = len(events)
        self.finished = bool(events) and events[-1][2] == "done"
        self.hub.closed = self.finished
        self.waiters = waiters
        self.task: asyncio.Task[None] | None = None
        self.last_read = asyncio.get_running_loop().time()
        #: The run's record once read: it never changes. Retention deletes only ended runs;
        #: one whose `done` never reached this node stops its follower at the next catch-up.
        self.record: RunRecord | None = None
        #: The store's log has parted from this node's copy (Followers._catch_up).
        self.parted = False

    @property
    def last_seq(self) -> int:
        """The seq of the last event this process has."""
        return len(self.events)

    def extend(self, rows: list[Row]) -> None:
        """Append the rows that continue the log (others are skipped), waking readers."""
        added = False
        for row in rows:
            if self.finished or row[1] != len(self.events) + 1:
                continue
            self.events.append(row)
            added = True
            event = Event._make(row)
            self.finished = event.is_final
            self.hub.publish(event)
        if added:
            self.waiters.wake(self.run_id)

    def read(self, *, after: int, limit: int | None) -> list[Event]:
        """The events with seq > `after`, at most `limit`."""
        self.last_read = asyncio.get_running_loop().time()
        rows = self.events[after:] if limit is None else self.events[after : after + limit]
        return [Event._make(row) for row in rows]


class Followers:
    """The runs this process follows, each kept up to date by a task of its own."""

    def __init__(
        self, redis: aioredis.Redis, keys: Keys, stored: StoredEvents, tail: StoredTail
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._stored = stored
        self._tail = tail
        self._by_run: dict[str, Follower] = {}
        self.waiters = Waiters()
        self._closed = False

    def get(self, run_id: str) -> Follower | None:
        """The run's follower, if this process follows it."""
        return self._by_run.get(run_id)

    async def follow(self, run_id: str, events: list[Row]) -> Follower:
        """Follow a run from the events read from the store, and what its live window adds.

        A follower that exists already is kept.
        """
        follower = self._by_run.get(run_id)
        if follower is not None:
            follower.extend(events[follower.last_seq :])
            return follower
        try:
            window: Any = await self._redis.xrange(
                self._keys.events(run_id), min=entry_id(len(events) + 1), count=READ_COUNT
            )
        except ERRORS:
            window = []
        follower = self._by_run.get(run_id)
        if follower is not None:  # another reader started one meanwhile
            follower.extend(events[follower.last_seq :])
            return follower
        follower = Follower(run_id, list(events), waiters=self.waiters)
        follower.extend([row_of(run_id, entry) for entry in window])
        if follower.finished or self._closed:
            # Ended between the store's read and the window's (or shutting down): this
            # caller reads it once; kept, it would stay in memory, as no task would drop it.
            return follower
        self._by_run[run_id] = follower
        follower.task = asyncio.create_task(self._keep_up(follower), name=f"follow-{run_id}")
        return follower

    async def wait(self, follower: Follower, *, after: int, timeout: float) -> bool:
        """Wait until the followed run has an event with seq > `after`; False on timeout."""
        follower.last_read = asyncio.get_running_loop().time()
        if follower.last_seq > after or follower.finished or self._closed:
            return follower.last_seq > after
        await self.waiters.wait(follower.run_id, timeout=timeout)
        return follower.last_seq > after

    async def close(self) -> None:
        """Stop following every run and wake every reader."""
        self._closed = True
        await stop(*(f.task for f in self._by_run.values()))
        for follower in list(self._by_run.values()):
            follower.hub.close()
        self.waiters.wake_all()

    async def _keep_up(self, follower: Follower) -> None:
        loop = asyncio.get_running_loop()
        key = self._keys.events(follower.run_id)
        try:
            while not follower.finished:
                if loop.time() - follower.last_read > IDLE_S and not follower.hub.followed:
                    break
                try:
                    rows = await self._read_window(key, follower.run_id, follower.last_seq)
                except ERRORS as exc:
                    log.debug("live window of run %s unreadable (%s)", follower.run_id, exc)
                    if not await self._catch_up(follower):
                        break
                    await asyncio.sleep(POLL_S)
                    continue
                # Nothing new for a while, or the window does not reach back to our last event
                # (PostgreSQL had not committed it yet, or Redis lost it): the database has
                # every event up to the window's first, unless the run is gone.
                behind = not rows or rows[0][1] != follower.last_seq + 1
                if behind and not await self._catch_up(follower):
                    break
                follower.extend(rows)
                del rows  # the follower has them: not kept by this frame while the next read waits
        except StoreUnavailable as exc:
            log.warning("following run %s: the run store failed (%s)", follower.run_id, exc)
        except Exception:
            # Its readers start another follower; this one must not die unheard.
            log.exception("following run %s failed unexpectedly", follower.run_id)
        finally:
            if self._by_run.get(follower.run_id) is follower:
                del self._by_run[follower.run_id]
            # Readers fall back to the store (and start another follower if need be).
            follower.hub.close()
            self.waiters.wake(follower.run_id)

    async def _read_window(self, key: str, run_id: str, after: int) -> list[Row]:
        """The live window's events after seq `after` (up to READ_COUNT, waiting BLOCK_MS).

        A function of its own, so that Redis's reply (its entries' field dictionaries) is
        freed when it returns, not kept by `_keep_up` while its next read waits.
        """
        reply: Any = await self._redis.xread(
            {key: entry_id(after)}, count=READ_COUNT, block=BLOCK_MS
        )
        return [row_of(run_id, entry) for _, entries in reply for entry in entries]

    async def _catch_up(self, follower: Follower) -> bool:
        """Add what PostgreSQL has after the follower's last event; False to stop following.

        It stops when the run is gone: retention deleted it after its end, whose publication
        to the live window was lost (a Redis restart), so this node never saw the `done`.
        Following it would go on for as long as anyone listens.

        It stops too when the store's log has parted from this node's: the run's executor
        died and Redis lost the live window with it, so the events this node had from the
        window past the last committed one were lost, and the sweep's ending (`error`
        worker_lost, `done`) took their seqs. The store's last event the follower has is
        read again to see that; and when the store has fewer events than the follower, which
        is the usual state for a moment (commits trail the window), a store whose run has
        ended says so. The follower's readers then fall back to the store, where the crash
        rule applies (docs/protocol.md, "After a crash").
        """
        last = follower.last_seq
        try:
            rows = await self._stored(follower.run_id, max(0, last - 1))
            if rows is not None and last and not rows:
                tail = await self._tail(follower.run_id)
                if tail is not None and tail.end is not None:
                    return self._parted(follower)
        except StoreUnavailable:
            return True
        if rows is None:
            log.info("run %s is no longer in the store: stopped following it", follower.run_id)
            return False
        if last and rows:
            if not _same(follower.events[last - 1], rows[0]):
                return self._parted(follower)
            rows = rows[1:]
        follower.extend(rows)
        return True

    def _parted(self, follower: Follower) -> bool:
        follower.parted = True
        log.warning(
            "run %s: its stored log has parted from this node's after event %d (its executor "
            "died with events Redis lost); its listeners here resume from the store",
            follower.run_id,
            follower.last_seq,
        )
        return False
