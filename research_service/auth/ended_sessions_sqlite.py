"""Ended sessions in the SQLite run store file (`ended_sessions`), so a restart remembers them.

Its own connection to the file, as the API keys have (SQLite's WAL serialises the writes), used
from a thread of its own: a session check never waits on the event loop's thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

from research_service.own_thread import OwnThread
from research_service.runs.sqlite_db import connect, found_ids, unavailable

T = TypeVar("T")


class SqliteEndedSessions:
    """The `ended_sessions` table of the run store file at `path` (schema 5)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection = connect(path)
        self._lock = threading.Lock()
        self._thread = OwnThread("sessions")

    async def end(self, session_id: str, *, expires: int) -> None:
        """Record session `session_id` as ended until `expires`."""
        await self._call(self._end, session_id, expires)

    async def ended(self, session_ids: Collection[str]) -> set[str]:
        """Which of `session_ids` have been ended."""
        if not session_ids:
            return set()
        return await self._call(self._ended, list(session_ids))

    async def purge(self, *, now: float) -> int:
        """Forget the sessions whose expiry is past."""
        return await self._call(self._purge, now)

    async def close(self) -> None:
        """Close the connection; the thread ends once idle."""
        await self._thread.call(self._close)
        self._thread.close()

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        try:
            return await self._thread.call(function, *args)
        except sqlite3.Error as exc:
            raise unavailable(self.path, exc) from None

    def _end(self, session_id: str, expires: int) -> None:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            # A later expiry wins: the same id signed out twice is kept the longer.
            self._db.execute(
                "INSERT INTO ended_sessions (id, expires_at) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                (session_id, expires),
            )

    def _ended(self, session_ids: list[str]) -> set[str]:
        query = "SELECT id FROM ended_sessions WHERE id IN ({marks})"
        return found_ids(self._db, query, session_ids, lock=self._lock)

    def _purge(self, now: float) -> int:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute("DELETE FROM ended_sessions WHERE expires_at <= ?", (now,))
        return cursor.rowcount

    def _close(self) -> None:
        with self._lock:
            self._db.close()
