"""Publishes each event a run appends to the run's live window in Redis, in pipelined batches."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final

import redis.asyncio as aioredis

from research_service.cluster.redis_link import ERRORS, Keys
from research_service.cluster.tasks import stop
from research_service.outage import Outage
from research_service.runs.run_memory import Row

log = logging.getLogger(__name__)

#: Events a run's live window keeps (roughly: trimmed with `~`); older ones are read from
#: PostgreSQL. A listener further behind than this catches up from the database.
WINDOW_EVENTS: Final = 10_000
#: How long a run's live window outlives its last event.
WINDOW_TTL_MS: Final = 3_600_000
#: Events waiting while Redis does not answer; beyond it the oldest are dropped (they are
#: in PostgreSQL, and a follower fills any gap from there).
MAX_PENDING: Final = 100_000
RETRY_S: Final = 0.5


def entry_id(seq: int) -> str:
    """The Stream entry id of an event: its seq, so a reader resumes after `<seq>-0`."""
    return f"{seq}-0"


def row_of(run_id: str, entry: tuple[bytes, dict[bytes, bytes]]) -> Row:
    """The event a live window's entry holds."""
    entry_key, fields = entry
    seq = int(entry_key.split(b"-", 1)[0])
    return (run_id, seq, fields[b"n"].decode(), int(fields[b"t"]), fields[b"w"])


class LivePublisher:
    """One per process: a task sends what runs appended, everything pending in one pipeline.

    `publish` never waits: the run's task goes on while the batch is on its way, and under
    load events pile up between two round trips and go out together.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._pending: deque[Row] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        """Start sending."""
        self._task = asyncio.create_task(self._send_forever(), name="live-publisher")

    def publish(self, row: Row) -> None:
        """Queue one event for the run's live window."""
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
        self._pending.append(row)
        self._idle.clear()
        self._wake.set()

    async def flushed(self, timeout: float) -> bool:
        """Wait until everything published so far was sent (or `timeout`); False if not."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 2.0) -> None:
        """Send what is pending (trying for `timeout` s), then stop."""
        await self.flushed(timeout)
        await stop(self._task)

    async def _send_forever(self) -> None:
        outage = Outage("cannot publish live events to Redis")
        while True:
            if not self._pending:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            batch = list(self._pending)
            try:
                await self._send(batch)
            except ERRORS as exc:
                outage.failed(exc)
                await asyncio.sleep(RETRY_S)
                continue
            outage.ok()
            for _ in batch:
                if self._pending:
                    self._pending.popleft()

    async def _send(self, batch: list[Row]) -> None:
        keys = self._keys
        pipe = self._redis.pipeline(transaction=False)
        runs: set[str] = set()
        for run_id, seq, name, t_ms, wire in batch:
            key = keys.events(run_id)
            runs.add(key)
            pipe.xadd(
                key,
                {"n": name, "t": t_ms, "w": wire},
                id=entry_id(seq),
                maxlen=WINDOW_EVENTS,
                approximate=True,
            )
        for key in runs:
            pipe.pexpire(key, WINDOW_TTL_MS)
        # An id at or below the window's last one is an event sent before (a retry after a
        # lost reply): Redis refuses it, and that refusal is the success we wanted.
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "equal or smaller" not in str(result):
                raise result
