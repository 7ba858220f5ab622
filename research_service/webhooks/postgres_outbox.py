"""The outbox in the PostgreSQL run store: the SQLite outbox's statements, on the store's pool.

A module of its own, so that a process on another store never loads asyncpg.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from research_service.runs.postgres_db import ERRORS as PG_ERRORS
from research_service.runs.postgres_db import unavailable
from research_service.webhooks.outbox import BATCH, Delivery
from research_service.webhooks.sql_outbox import (
    ADD,
    CLAIM,
    COLUMNS,
    DUE,
    PENDING,
    SAVE,
    delivery_of,
    values_of,
)


def _pg(sql: str) -> str:
    """The SQLite statement with PostgreSQL's numbered placeholders."""
    parts = sql.split("?")
    return "".join(f"{part}${n}" for n, part in enumerate(parts[:-1], start=1)) + parts[-1]


class PostgresOutbox:
    """The deliveries in the PostgreSQL run store, on the store's pool."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def add(self, deliveries: Sequence[Delivery]) -> None:
        """Keep new deliveries."""
        try:
            await self._pool.executemany(_pg(ADD), [values_of(d) for d in deliveries])
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc

    async def due(self, *, now: float, limit: int = BATCH) -> list[Delivery]:
        """Pending, due, not held and of an ended run; the scopes taking turns."""
        try:
            rows = await self._pool.fetch(_pg(DUE), now, now, limit)
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc
        return [delivery_of(tuple(row)) for row in rows]

    async def claim(self, delivery_id: str, *, now: float, until: float) -> bool:
        """Hold it unless another node does (one UPDATE: exactly one node wins)."""
        try:
            status = await self._pool.execute(_pg(CLAIM), until, delivery_id, now)
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc
        return status == "UPDATE 1"

    async def save(self, delivery: Delivery, *, hold_until: float | None = None) -> None:
        """Record an attempt's outcome."""
        d = delivery
        params = (d.state, d.attempts, d.next_at, d.first_tried_at, d.last_error, hold_until, d.id)
        try:
            await self._pool.execute(_pg(SAVE), *params)
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc

    async def pending(self) -> bool:
        """Whether any delivery is pending."""
        try:
            return await self._pool.fetchval(PENDING) is not None
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc

    async def release(self) -> None:
        """Nothing: other nodes may hold deliveries; a dead node's holds run out."""

    async def of_run(self, run_id: str) -> list[Delivery]:
        """The run's deliveries."""
        sql = f"SELECT {COLUMNS} FROM webhook_deliveries WHERE run_id = $1 ORDER BY created_at"
        try:
            return [delivery_of(tuple(row)) for row in await self._pool.fetch(sql, run_id)]
        except PG_ERRORS as exc:
            raise unavailable(exc) from exc

    async def close(self) -> None:
        """Nothing: the pool is the store's."""
