"""The PostgreSQL store's write-behind queue: each batch one transaction of inserts."""

from __future__ import annotations

from typing import Any, Final

import asyncpg

from research_service.errors import StoreUnavailable
from research_service.runs.batch_writer import BatchWriter
from research_service.runs.postgres_db import ERRORS, unavailable
from research_service.runs.run_memory import Row

_INSERT: Final = (
    "INSERT INTO events (run_id, seq, name, t_ms, wire) VALUES ($1, $2, $3, $4, $5) "
    # A batch whose commit succeeded but whose answer was lost is retried: already there.
    "ON CONFLICT DO NOTHING"
)


class EventWriter(BatchWriter):
    """Commits queued events to PostgreSQL, a batch per transaction."""

    errors = ERRORS

    def __init__(self, pool: asyncpg.Pool[Any], **options: Any) -> None:
        super().__init__(name="PostgreSQL", **options)
        self._pool = pool

    async def _write(self, batch: list[Row]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT, batch)

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return unavailable(exc)
