"""Ended sessions in the PostgreSQL run store (`ended_sessions`): one record for every node.

With `--store postgres`, alone or as a cluster, the database is the durable record every API
node already reads; a session signed out on one node is refused by all of them from the next
request on, and a restart of any engine (Redis included) forgets none.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import asyncpg

from research_service.runs.postgres_db import ERRORS, unavailable

_END = (
    "INSERT INTO ended_sessions (id, expires_at) VALUES ($1, $2) "
    "ON CONFLICT (id) DO UPDATE SET expires_at = greatest(ended_sessions.expires_at, "
    "excluded.expires_at)"
)


class PostgresEndedSessions:
    """The `ended_sessions` table of the database behind `pool` (schema 4); handed its pool."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def end(self, session_id: str, *, expires: int) -> None:
        """Record session `session_id` as ended until `expires`."""
        try:
            await self._pool.execute(_END, session_id, float(expires))
        except ERRORS as exc:
            raise unavailable(exc) from None

    async def ended(self, session_ids: Collection[str]) -> set[str]:
        """Which of `session_ids` have been ended."""
        if not session_ids:
            return set()
        try:
            rows = await self._pool.fetch(
                "SELECT id FROM ended_sessions WHERE id = ANY($1::text[])", list(session_ids)
            )
        except ERRORS as exc:
            raise unavailable(exc) from None
        return {row["id"] for row in rows}

    async def purge(self, *, now: float) -> int:
        """Forget the sessions whose expiry is past."""
        try:
            status = await self._pool.execute(
                "DELETE FROM ended_sessions WHERE expires_at <= $1", now
            )
        except ERRORS as exc:
            raise unavailable(exc) from None
        return int(status.rsplit(" ", 1)[-1])

    async def close(self) -> None:
        """Nothing to release: the pool is the run store's."""
