"""The PostgreSQL run store's database: schema, migrations, the pool and failures in words."""

from __future__ import annotations

import logging
from typing import Any, Final, TypeAlias

import asyncpg

from research_service.addresses import redact_url as redact
from research_service.errors import ConfigError, StoreUnavailable
from research_service.runs.migrations import (
    MIGRATIONS_TABLE,
    RECORD_MISSED_ENDS,
    Migration,
    check,
    plan,
)

log = logging.getLogger(__name__)

#: How long opening a connection may take before the database counts as unreachable.
CONNECT_TIMEOUT_S: Final = 5.0
#: Longest one statement may take; a stuck server fails the call instead of hanging a run.
COMMAND_TIMEOUT_S: Final = 10.0
DEFAULT_POOL_MIN: Final = 1
DEFAULT_POOL_MAX: Final = 10
#: A request refused because the store cannot write may succeed again after this long.
STORE_RETRY_AFTER_S: Final = 5
#: Longest one migration statement may take: a step may read every stored run once.
MIGRATION_TIMEOUT_S: Final = 3600.0
#: Serialises migrations of processes starting at once (pg_advisory_xact_lock key).
MIGRATION_LOCK: Final = 0x7265_7365_6172_6368  # "research"
#: How the store is named in messages about its schema.
STORE_NAME: Final = "the PostgreSQL run store"

#: Every failure of a call to the database: the server's errors, a lost connection, a timeout.
ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
DatabaseError: TypeAlias = asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError

#: Every step from an empty database, in order, each applied in the transaction that records it
#: in `schema_migrations`; a release only ever appends to this list, and a step never drops data.
MIGRATIONS: Final = (
    Migration(
        1,
        "runs and events",
        (
            """CREATE TABLE runs (
                id text PRIMARY KEY,
                question text NOT NULL,
                options jsonb NOT NULL,
                created_at double precision NOT NULL,
                owner text
            )""",
            "CREATE INDEX runs_by_created ON runs (created_at, id)",
            "CREATE INDEX runs_by_owner ON runs (owner, created_at, id)",
            """CREATE TABLE events (
                run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                seq integer NOT NULL,
                name text NOT NULL,
                t_ms bigint NOT NULL,
                wire bytea NOT NULL,
                PRIMARY KEY (run_id, seq)
            )""",
        ),
    ),
    Migration(
        2,
        "executions (cluster mode)",
        (
            # One row per run created in cluster mode: queued (no executor), claimed by the
            # executor that runs it (exactly once), ended when its done is stored.
            """CREATE TABLE executions (
                run_id text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
                executor text,
                queued_at double precision NOT NULL,
                claimed_at double precision,
                ended_at double precision
            )""",
            "CREATE INDEX executions_open ON executions (run_id) WHERE ended_at IS NULL",
        ),
    ),
    Migration(
        3,
        "webhook deliveries",
        (
            # research_service/webhooks/outbox.py: one row per notification a run's end owes.
            """CREATE TABLE webhook_deliveries (
                id text PRIMARY KEY,
                run_id text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                url text NOT NULL,
                scope text NOT NULL,
                base_url text NOT NULL,
                created_at double precision NOT NULL,
                state text NOT NULL,
                attempts integer NOT NULL,
                next_at double precision NOT NULL,
                first_tried_at double precision,
                last_error text,
                held_until double precision
            )""",
            "CREATE INDEX webhook_deliveries_of_run ON webhook_deliveries (run_id)",
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) "
            "WHERE state = 'pending'",
        ),
    ),
    Migration(
        4,
        "ended sessions",
        (
            # research_service/auth/ended_sessions_postgres.py: a panel session signed out
            # before its expiry, kept until then (purged after); every API node reads it.
            """CREATE TABLE ended_sessions (
                id text PRIMARY KEY,
                expires_at double precision NOT NULL
            )""",
            "CREATE INDEX ended_sessions_by_expiry ON ended_sessions (expires_at)",
        ),
    ),
    Migration(
        5,
        "when each run ended",
        (
            # Set when a run's `done` is stored (research_service/runs/postgres_writer.py), so
            # the runs not yet ended are found by an index, not by reading every run's last
            # event. The UPDATE reads every run once: MIGRATION_TIMEOUT_S, not a query's bound.
            "ALTER TABLE runs ADD COLUMN ended_at double precision",
            RECORD_MISSED_ENDS,
            "CREATE INDEX runs_open ON runs (created_at, id) WHERE ended_at IS NULL",
        ),
    ),
)
check(MIGRATIONS)
_LEDGER: Final = f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def unreachable(url: str, exc: BaseException) -> ConfigError:
    """Why start-up stops when the database at `url` cannot be used, and what to do."""
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        hint = "create the database first (createdb), or fix the name in --database-url"
    elif isinstance(
        exc, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError
    ):
        hint = "fix the user or password in --database-url (RESEARCH_DATABASE_URL)"
    else:
        hint = (
            "check --database-url (RESEARCH_DATABASE_URL or DATABASE_URL) and that the server "
            "is up, or use --store sqlite"
        )
    reason = str(exc) or type(exc).__name__
    return ConfigError(f"cannot use the PostgreSQL run store at {redact(url)} ({reason}); {hint}")


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The StoreUnavailable a request gets when a call to the database fails with `exc`."""
    if isinstance(exc, asyncpg.DiskFullError):
        slug, message = "storage-full", "the PostgreSQL run store's disk is full; free some space"
    elif isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        slug, message = "store-read-only", "the PostgreSQL run store is read-only (a standby?)"
    else:
        reason = str(exc) or type(exc).__name__
        slug, message = "store-unavailable", f"the PostgreSQL run store failed ({reason})"
    return StoreUnavailable(message, slug=slug, retry_after=STORE_RETRY_AFTER_S, advise_retry=True)


async def apply_migrations(
    conn: asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any],
) -> list[Migration]:
    """Apply the steps the schema lacks, in one transaction; the steps applied."""
    async with conn.transaction():
        # Processes starting at once take turns: the second finds the steps applied.
        # A step may take minutes on a large database: the others wait for it, not fail.
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT_S
        )
        # Made only where missing: a database that takes no writes (read-only, a standby) is
        # opened all the same when it lacks no step, and its check says why runs are refused.
        if await conn.fetchval("SELECT to_regclass($1)", MIGRATIONS_TABLE) is None:
            await conn.execute(_LEDGER)
        rows = await conn.fetch(f"SELECT version FROM {MIGRATIONS_TABLE}")
        pending = plan(
            MIGRATIONS, {row["version"] for row in rows}, store=STORE_NAME, flag="--database-url"
        )
        for step in pending:
            for statement in step.statements:
                await conn.execute(statement, timeout=MIGRATION_TIMEOUT_S)
            await conn.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)",
                step.version,
                step.name,
            )
            log.info("%s: %s", STORE_NAME, step.describe())
    return pending


async def migrate(url: str) -> list[str]:
    """Apply the steps the database at `url` lacks; each applied, in words (for `migrate`)."""
    try:
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except ERRORS as exc:
        raise unreachable(url, exc) from None
    try:
        return [step.describe() for step in await apply_migrations(conn)]
    except ERRORS as exc:
        raise unreachable(url, exc) from None
    finally:
        await conn.close()


async def keep_session(conn: asyncpg.Connection[Any]) -> None:
    """A pool's `reset`: nothing to undo, so a connection goes back without a round trip.

    asyncpg's default sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release, one more round trip per query. The service keeps no state
    in a session (no SET, LISTEN, session advisory lock or held cursor; the migration lock
    is a transaction's), and asyncpg still rolls back a transaction left open.
    """


async def open_pool(
    url: str, *, min_size: int = DEFAULT_POOL_MIN, max_size: int = DEFAULT_POOL_MAX
) -> asyncpg.Pool[Any]:
    """A pool on the database at `url`, its schema migrated; ConfigError if it cannot be used."""
    try:
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            reset=keep_session,
        )
    except ERRORS as exc:
        raise unreachable(url, exc) from None
    try:
        async with pool.acquire() as conn:
            await apply_migrations(conn)
    except BaseException as exc:
        await pool.close()
        if isinstance(exc, ERRORS):
            raise unreachable(url, exc) from None
        raise
    return pool
