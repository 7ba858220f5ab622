"""The outbox in the SQLite run store's own file, and the statements both SQL outboxes ask.

webhooks/postgres_outbox.py keeps the PostgreSQL one (a cluster's). Both keep the
`webhook_deliveries` table (schema 3 of each store). A hold (`held_until`) lets one process
send a delivery while the others leave it alone; a process that dies lets go when its hold runs
out, and any process then sends it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from research_service.own_thread import OwnThread
from research_service.runs.sqlite_db import connect
from research_service.runs.sqlite_db import unavailable as sqlite_unavailable
from research_service.webhooks.outbox import BATCH, Delivery

COLUMNS: Final = (
    "id, run_id, url, scope, base_url, created_at, state, attempts, next_at, first_tried_at, "
    "last_error"
)
ADD: Final = f"INSERT INTO webhook_deliveries ({COLUMNS}) VALUES ({', '.join('?' * 11)})"
# Only deliveries whose run has its `done` stored (its last event, found by the primary key):
# however many runs with webhooks are still going, they never crowd out those that ended.
# The scopes take turns (outbox.in_turns): each scope's first due, then each one's second, …,
# so a key with thousands due never crowds out the other keys' deliveries.
DUE: Final = (
    f"SELECT {COLUMNS} FROM (SELECT {COLUMNS}, "
    "row_number() OVER (PARTITION BY scope ORDER BY next_at, created_at, id) AS turn "
    "FROM webhook_deliveries WHERE state = 'pending' AND next_at <= ? "
    "AND (held_until IS NULL OR held_until <= ?) "
    "AND (SELECT name FROM events WHERE events.run_id = webhook_deliveries.run_id "
    "ORDER BY seq DESC LIMIT 1) = 'done') AS due "
    "ORDER BY turn, next_at, created_at, id LIMIT ?"
)
CLAIM: Final = (
    "UPDATE webhook_deliveries SET held_until = ? WHERE id = ? "
    "AND (held_until IS NULL OR held_until <= ?)"
)
PENDING: Final = "SELECT 1 FROM webhook_deliveries WHERE state = 'pending' LIMIT 1"
SAVE: Final = (
    "UPDATE webhook_deliveries SET state = ?, attempts = ?, next_at = ?, first_tried_at = ?, "
    "last_error = ?, held_until = ? WHERE id = ?"
)


def delivery_of(values: Sequence[Any]) -> Delivery:
    return Delivery(*values)


def values_of(d: Delivery) -> tuple[Any, ...]:
    return (
        d.id,
        d.run_id,
        d.url,
        d.scope,
        d.base_url,
        d.created_at,
        d.state,
        d.attempts,
        d.next_at,
        d.first_tried_at,
        d.last_error,
    )


class SqliteOutbox:
    """The deliveries in the SQLite run store, through a connection of its own (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection = connect(path)
        self._lock = threading.Lock()
        # Its own thread, as the run store has: never queued behind searches or page reads.
        self._thread = OwnThread("webhook-outbox")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """The connection, to one caller at a time; a failure says the store is unavailable."""
        try:
            with self._lock:
                yield self._db
        except (sqlite3.Error, OSError) as exc:
            raise sqlite_unavailable(self.path, exc) from None

    def _run(self, sql: str, *params: Any, many: Sequence[Sequence[Any]] = ()) -> int:
        with self._connection() as db, db:
            if many:
                return db.executemany(sql, many).rowcount
            return db.execute(sql, params).rowcount

    def _select(self, sql: str, *params: Any) -> list[Delivery]:
        with self._connection() as db:
            return [delivery_of(row) for row in db.execute(sql, params).fetchall()]

    async def add(self, deliveries: Sequence[Delivery]) -> None:
        """Keep new deliveries."""
        rows = [values_of(d) for d in deliveries]
        await self._thread.call(lambda: self._run(ADD, many=rows))

    async def due(self, *, now: float, limit: int = BATCH) -> list[Delivery]:
        """Pending, due, not held and of an ended run; the scopes taking turns."""
        return await self._thread.call(self._select, DUE, now, now, limit)

    async def claim(self, delivery_id: str, *, now: float, until: float) -> bool:
        """Hold it unless another process does."""
        return await self._thread.call(self._run, CLAIM, until, delivery_id, now) == 1

    async def save(self, delivery: Delivery, *, hold_until: float | None = None) -> None:
        """Record an attempt's outcome."""
        d = delivery
        params = (d.state, d.attempts, d.next_at, d.first_tried_at, d.last_error, hold_until, d.id)
        await self._thread.call(self._run, SAVE, *params)

    async def pending(self) -> bool:
        """Whether any delivery is pending."""
        found = await self._thread.call(self._select_one, PENDING)
        return found is not None

    def _select_one(self, sql: str) -> tuple[Any, ...] | None:
        with self._connection() as db:
            row: tuple[Any, ...] | None = db.execute(sql).fetchone()
            return row

    async def release(self) -> None:
        """Drop every hold: this process is the store's only one."""
        # Only the held rows: every delivery ever made stays (until retention), and a start
        # must not rewrite them all.
        await self._thread.call(
            self._run,
            "UPDATE webhook_deliveries SET held_until = NULL WHERE held_until IS NOT NULL",
        )

    async def of_run(self, run_id: str) -> list[Delivery]:
        """The run's deliveries."""
        sql = f"SELECT {COLUMNS} FROM webhook_deliveries WHERE run_id = ? ORDER BY created_at"
        return await self._thread.call(self._select, sql, run_id)

    async def close(self) -> None:
        """Close the connection."""
        await self._thread.call(self._db.close)
        self._thread.close()
