"""API keys kept in the SQLite run store (`research-service keys`): hashes only, never secrets.

Used from worker threads by the service and directly by the `keys` command, each through its
own connection; the run store's lock is not needed (SQLite's WAL serialises the writes).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from research_service.auth.keys import KeyInfo, StoredKey, check_name, hashed, new_key
from research_service.errors import ConfigError
from research_service.runs.sqlite_db import connect, found_ids

#: `last used` is written at most this often per key (by the Keyring).
TOUCH_EVERY_S: Final = 60.0
_COLUMNS: Final = "id, name, admin, salt, hash"


@dataclass(frozen=True, slots=True)
class KeyListing:
    """One key as `keys list` shows it (never its secret or hash)."""

    name: str
    admin: bool
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


def _stored(row: tuple[Any, ...]) -> StoredKey:
    key_id, name, admin, salt, digest = row
    return StoredKey(KeyInfo(key_id, name, bool(admin)), bytes(salt), bytes(digest))


class SqliteKeys:
    """The `api_keys` table of the run store file at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection = connect(path)
        self._lock = threading.Lock()

    def create(self, name: str, *, admin: bool) -> tuple[KeyInfo, str]:
        """Store a new key named `name`; its info and the key itself (shown once)."""
        check_name(name)
        key_id, key = new_key()
        stored = hashed(KeyInfo(key_id, name, admin), key)
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO api_keys (id, name, admin, salt, hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key_id, name, int(admin), stored.salt, stored.digest, time.time()),
                )
        except sqlite3.IntegrityError:
            raise ConfigError(
                f"a key named {name!r} exists; revoke it first (keys revoke {name}) or "
                "choose another name"
            ) from None
        return stored.info, key

    def revoke(self, name: str) -> bool:
        """Revoke the usable key named `name`; False when there is none."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
        return cursor.rowcount > 0

    def listing(self) -> list[KeyListing]:
        """Every key, usable and revoked, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, admin, created_at, last_used_at, revoked_at FROM api_keys "
                "ORDER BY created_at, name"
            ).fetchall()
        return [KeyListing(n, bool(a), c, u, r) for n, a, c, u, r in rows]

    def find(self, key_id: str) -> StoredKey | None:
        """The usable (not revoked) key with id `key_id`, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE id = ? AND revoked_at IS NULL", (key_id,)
            ).fetchone()
        return None if row is None else _stored(row)

    def usable(self, key_ids: list[str]) -> set[str]:
        """Which of `key_ids` are still usable."""
        query = "SELECT id FROM api_keys WHERE revoked_at IS NULL AND id IN ({marks})"
        return found_ids(self._db, query, key_ids, lock=self._lock)

    def touch(self, key_id: str) -> None:
        """Note that the key was used now (best effort)."""
        now = time.time()
        try:
            with self._lock, self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (now, key_id))
        except sqlite3.Error:
            # A full disk must not refuse a request: `last used` is a convenience.
            pass

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
