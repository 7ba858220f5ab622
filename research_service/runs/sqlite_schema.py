"""The SQLite run store's schema: its migrations, and bringing a file up to the newest one."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from research_service.runs.migrations import (
    MIGRATIONS_TABLE,
    RECORD_MISSED_ENDS,
    Migration,
    Outcome,
    latest,
    plan,
)

log = logging.getLogger(__name__)

#: Every step from an empty file, in order; a release only ever appends to this list.
MIGRATIONS: Final = (
    Migration(
        1,
        "runs and their events",
        (
            """CREATE TABLE IF NOT EXISTS runs (
                id TEXT PRIMARY KEY,
                question TEXT NOT NULL,
                options TEXT NOT NULL,
                created_at REAL NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at, id)",
            """CREATE TABLE IF NOT EXISTS events (
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                name TEXT NOT NULL,
                t_ms INTEGER NOT NULL,
                wire BLOB NOT NULL,
                PRIMARY KEY (run_id, seq)
            ) WITHOUT ROWID""",
        ),
    ),
    Migration(
        2,
        "run owners and API keys",
        (
            "ALTER TABLE runs ADD COLUMN owner TEXT",
            "CREATE INDEX runs_by_owner ON runs (owner, created_at, id)",
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                admin INTEGER NOT NULL,
                salt BLOB NOT NULL,
                hash BLOB NOT NULL,
                created_at REAL NOT NULL,
                last_used_at REAL,
                revoked_at REAL
            )""",
            # One usable key per name: a name is the owner its runs belong to.
            "CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL",
        ),
    ),
    Migration(
        3,
        "webhook deliveries",
        (
            # research_service/webhooks/outbox.py: one row per notification a run's end owes.
            """CREATE TABLE webhook_deliveries (
                id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                url TEXT NOT NULL,
                scope TEXT NOT NULL,
                base_url TEXT NOT NULL,
                created_at REAL NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_at REAL NOT NULL,
                first_tried_at REAL,
                last_error TEXT,
                held_until REAL
            )""",
            "CREATE INDEX webhook_deliveries_of_run ON webhook_deliveries (run_id)",
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) "
            "WHERE state = 'pending'",
        ),
    ),
    Migration(
        4,
        "token events stored several to a row",
        (
            # No table changes: rows named `tokens` now hold several token events
            # (research_service/runs/sqlite_segments.py). The step is recorded so that a release
            # that would read such a row as one event refuses the file instead.
            "SELECT 1",
        ),
    ),
    Migration(
        5,
        "ended sessions",
        (
            # research_service/auth/ended_sessions_sqlite.py: a panel session signed out before
            # its expiry, kept until then (purged after).
            """CREATE TABLE ended_sessions (
                id TEXT PRIMARY KEY,
                expires_at REAL NOT NULL
            ) WITHOUT ROWID""",
            "CREATE INDEX ended_sessions_by_expiry ON ended_sessions (expires_at)",
        ),
    ),
    Migration(
        6,
        "when each run ended",
        (
            # Set when a run's `done` is stored (research_service/runs/sqlite_db.py), so the
            # runs not yet ended are found by an index, not by reading every run's last event.
            "ALTER TABLE runs ADD COLUMN ended_at REAL",
            RECORD_MISSED_ENDS,
            "CREATE INDEX runs_open ON runs (created_at, id) WHERE ended_at IS NULL",
        ),
    ),
)

#: The newest schema this release reads and writes (the last migration's number).
SCHEMA_VERSION: Final = latest(MIGRATIONS)

# applied_at is NULL for the steps an earlier release applied before the table existed.
_TABLE: Final = f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL
)"""


class StepFailed(Exception):
    """A migration step failed and was rolled back; the file is at `version`, as it was."""

    def __init__(self, step: Migration, version: int, cause: sqlite3.Error | OSError) -> None:
        super().__init__(f"{step.describe()} failed ({cause}); left at schema {version}")
        self.step = step
        self.version = version
        self.cause = cause


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken at once (so two migrating processes take turns)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def applied_versions(db: sqlite3.Connection) -> list[int]:
    """The versions recorded in the migrations table, in order."""
    rows = db.execute(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version").fetchall()
    return [version for (version,) in rows]


def _has_table(db: sqlite3.Connection) -> bool:
    found = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
    ).fetchone()
    return found is not None


def _adopt(db: sqlite3.Connection, store: str) -> tuple[int, tuple[int, ...]]:
    """Make the migrations table, recording the steps a release before it applied.

    Those releases kept the version in `PRAGMA user_version` only (1 or 2); a file newer
    than this release is refused before anything is written to it. Returns the version
    found and the versions recorded now.
    """
    if _has_table(db):
        return max(applied_versions(db), default=0), ()
    version = db.execute("PRAGMA user_version").fetchone()[0]
    earlier = range(1, version + 1)
    plan(MIGRATIONS, earlier, store=store, flag="--data-dir")
    db.execute(_TABLE)
    db.executemany(
        f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES (?, ?)",
        [(step.version, step.name) for step in MIGRATIONS[:version]],
    )
    return version, tuple(earlier)


def migrate(db: sqlite3.Connection, path: Path) -> Outcome:
    """Bring the open file to SCHEMA_VERSION, each step in its own transaction.

    ConfigError for a file this release cannot use; StepFailed when a step fails.
    """
    store = f"the run store {path}"
    with _transaction(db):
        before, adopted = _adopt(db, store)
    version, applied = before, []
    while True:
        with _transaction(db):
            # Read again inside the step's transaction: another process may have applied it.
            recorded = applied_versions(db)
            pending = plan(MIGRATIONS, recorded, store=store, flag="--data-dir")
            if not pending:
                version = max(recorded, default=0)
                break
            step = pending[0]
            try:
                for statement in step.statements:
                    db.execute(statement)
                db.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?, ?)",
                    (step.version, step.name, time.time()),
                )
                # Kept for the releases before the table: they refuse a file newer than them.
                db.execute(f"PRAGMA user_version = {step.version}")
            except sqlite3.Error as exc:
                raise StepFailed(step, version, exc) from exc
        log.info("run store %s: %s", path, step.describe())
        version = step.version
        applied.append(step)
    return Outcome(store, before, version, tuple(applied), adopted)
