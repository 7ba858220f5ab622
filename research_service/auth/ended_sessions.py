"""Where signed-out sessions are remembered until they expire: the interface and the memory one.

A session cookie is signed, so the service needs no table to accept one; it keeps only the ids
of the sessions signed out before their expiry, each until that expiry. One module per
backend: this one (memory, `--store memory`), `ended_sessions_sqlite` (the run store file)
and `ended_sessions_postgres` (the PostgreSQL database, which cluster nodes share).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol


class EndedSessions(Protocol):
    """The ended sessions of one deployment, each kept until its own expiry."""

    async def end(self, session_id: str, *, expires: int) -> None:
        """Record session `session_id` as ended until `expires` (Unix seconds); idempotent."""
        ...

    async def ended(self, session_ids: Collection[str]) -> set[str]:
        """Which of `session_ids` have been ended (StoreUnavailable when it cannot tell)."""
        ...

    async def purge(self, *, now: float) -> int:
        """Forget the sessions whose expiry is past (the cookie refuses them by itself)."""
        ...

    async def close(self) -> None:
        """Release what the store holds (a connection, a thread)."""
        ...


class MemoryEndedSessions:
    """Ended sessions in this process's memory: forgotten with it, like `--store memory`'s runs."""

    def __init__(self) -> None:
        self._expiry: dict[str, int] = {}

    async def end(self, session_id: str, *, expires: int) -> None:
        """Record session `session_id` as ended until `expires`."""
        self._expiry[session_id] = max(expires, self._expiry.get(session_id, expires))

    async def ended(self, session_ids: Collection[str]) -> set[str]:
        """Which of `session_ids` have been ended."""
        return {session_id for session_id in session_ids if session_id in self._expiry}

    async def purge(self, *, now: float) -> int:
        """Forget the sessions whose expiry is past."""
        past = [session_id for session_id, expires in self._expiry.items() if expires <= now]
        for session_id in past:
            del self._expiry[session_id]
        return len(past)

    async def close(self) -> None:
        """Nothing to release."""
