"""Who executes which run, in PostgreSQL: the one place a run is claimed, exactly once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from research_service.runs.models import RunRecord
from research_service.runs.postgres_db import ERRORS, unavailable
from research_service.runs.postgres_log import RUN_COLUMNS, record_of
from research_service.runs.postgres_writer import END_EXECUTION


@dataclass(frozen=True, slots=True)
class Execution:
    """A run not yet ended: queued (no executor) or claimed by one."""

    run_id: str
    executor: str | None
    queued_at: float


class Executions:
    """The `executions` table: a row per cluster run, from queued to ended."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def claim(self, run_id: str, executor: str) -> RunRecord | None:
        """Take a queued run for `executor`: its record; None if another took it (or it is gone)."""
        columns = ", ".join(f"r.{name.strip()}" for name in RUN_COLUMNS.split(","))
        sql = (
            "UPDATE executions e SET executor = $2, claimed_at = $3 FROM runs r "
            "WHERE e.run_id = $1 AND r.id = e.run_id AND e.executor IS NULL "
            f"AND e.ended_at IS NULL RETURNING {columns}"
        )
        try:
            row = await self._pool.fetchrow(sql, run_id, executor, time.time())
        except ERRORS as exc:
            raise unavailable(exc) from None
        return None if row is None else record_of(row)

    async def take_over(self, run_id: str, lost: str, executor: str) -> bool:
        """Take a run from an executor found lost; False if someone else did first."""
        sql = (
            "UPDATE executions SET executor = $3, claimed_at = $4 "
            "WHERE run_id = $1 AND executor = $2 AND ended_at IS NULL RETURNING run_id"
        )
        return await self._fetchval(sql, run_id, lost, executor, time.time()) is not None

    async def end(self, run_id: str) -> None:
        """The run has ended (its done is stored, or it never will be)."""
        await self._execute(END_EXECUTION, run_id, time.time())

    async def open(self) -> list[Execution]:
        """Every run not yet ended, oldest first."""
        sql = (
            "SELECT run_id, executor, queued_at FROM executions WHERE ended_at IS NULL "
            "ORDER BY queued_at"
        )
        rows = await self._fetch(sql)
        return [Execution(row[0], row[1], row[2]) for row in rows]

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await self._pool.fetch(sql, *args)
        except ERRORS as exc:
            raise unavailable(exc) from None

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self._pool.fetchval(sql, *args)
        except ERRORS as exc:
            raise unavailable(exc) from None

    async def _execute(self, sql: str, *args: Any) -> None:
        try:
            await self._pool.execute(sql, *args)
        except ERRORS as exc:
            raise unavailable(exc) from None
