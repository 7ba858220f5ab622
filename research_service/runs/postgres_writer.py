"""The PostgreSQL store's write-behind queue: each batch one transaction of inserts."""

from __future__ import annotations

import time
from typing import Any, Final

import asyncpg

from research_service.errors import StoreUnavailable
from research_service.runs.batch_writer import BatchWriter
from research_service.runs.postgres_db import ERRORS, unavailable
from research_service.runs.run_memory import Row

_INSERT: Final = (
    "INSERT INTO events (run_id, seq, name, t_ms, wire) SELECT $1, $2, $3, $4, $5 "
    # Nothing after a run's end. In a cluster, an executor that stalled for longer than a
    # lease (a frozen VM) comes back to a run another node has ended `worker_lost`: what it
    # still writes would follow that `done`, a second outcome (docs/cluster.md).
    "WHERE NOT EXISTS (SELECT 1 FROM runs WHERE id = $1 AND ended_at IS NOT NULL) "
    # A batch whose commit succeeded but whose answer was lost is retried: already there.
    "ON CONFLICT DO NOTHING"
)

#: A run's end, recorded with its `done` (schema 5: the open runs' index); the first one only.
_RECORD_END: Final = (
    "UPDATE runs SET ended_at = created_at + $2 / 1000.0 WHERE id = $1 AND ended_at IS NULL"
)
#: In a cluster, its execution's end too: nobody reads the `done` before the run is ended.
#: (The cluster's `Executions.end` records it with the same statement.)
END_EXECUTION: Final = "UPDATE executions SET ended_at = $2 WHERE run_id = $1 AND ended_at IS NULL"


class EventWriter(BatchWriter):
    """Commits queued events to PostgreSQL, a batch per transaction.

    `ends_executions` (cluster mode): a `done` also ends its run's row in `executions`, in
    the same transaction.
    """

    errors = ERRORS

    def __init__(
        self, pool: asyncpg.Pool[Any], *, ends_executions: bool = False, **options: Any
    ) -> None:
        super().__init__(name="PostgreSQL", **options)
        self._pool = pool
        self._ends_executions = ends_executions

    async def _write(self, batch: list[Row]) -> None:
        ends = [(row[0], row[3]) for row in batch if row[2] == "done"]
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.executemany(_INSERT, batch)
            if ends:
                await conn.executemany(_RECORD_END, ends)
                if self._ends_executions:
                    now = time.time()
                    await conn.executemany(END_EXECUTION, [(run, now) for run, _ in ends])

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return unavailable(exc)
