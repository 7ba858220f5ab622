"""The PostgreSQL event-log backend: live runs served from memory, events written in batches."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import asyncpg

from research_service.errors import StoreUnavailable
from research_service.events import Event
from research_service.runs.batch_writer import (
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_FLUSH_MAX_EVENTS,
    DEFAULT_MAX_PENDING_BYTES,
)
from research_service.runs.buffered_append import BufferedAppend
from research_service.runs.migrations import RECORD_MISSED_ENDS
from research_service.runs.models import RunEnd, RunOptions, RunRecord, RunTail, tail_of
from research_service.runs.postgres_db import ERRORS, open_pool, unavailable
from research_service.runs.postgres_writer import EventWriter
from research_service.runs.pruning import PRUNE_BATCH, Prefix, prune_past_limits
from research_service.runs.run_memory import Row, RunMemory

__all__ = ["PostgresEventLog", "open"]

DEFAULT_CACHE_SIZE: Final = 32
#: How long closing the store may try to write what is still queued.
CLOSE_TIMEOUT_S: Final = 2.0

RUN_COLUMNS: Final = "id, question, options, created_at, owner"
# The done payload, parsed by the server: the wire after its `\ndata: ` line prefix.
_DONE: Final = (
    "convert_from(substring(e.wire FROM position('\\x0a646174613a20'::bytea IN e.wire) + 7),"
    " 'UTF8')::jsonb"
)
_TAILS: Final = (
    "SELECT r.id, e.seq, e.t_ms, d.j ->> 'status', d.j -> 'error' ->> 'code', "
    "CASE WHEN jsonb_typeof(d.j -> 'sources') = 'array' THEN jsonb_array_length(d.j -> 'sources') "
    "ELSE 0 END, "
    # Waiting for a plan review: its last event is a `review` (docs/protocol.md).
    "e.name = 'phase' AND position(convert_to('\"status\":\"review\"', 'UTF8') IN e.wire) > 0 "
    "FROM runs r LEFT JOIN LATERAL (SELECT * FROM events WHERE run_id = r.id "
    "ORDER BY seq DESC LIMIT 1) e ON true "
    f"LEFT JOIN LATERAL (SELECT CASE WHEN e.name = 'done' THEN {_DONE} END AS j) d ON true "
    "WHERE r.id = ANY($1::text[])"
)


def record_of(row: asyncpg.Record) -> RunRecord:
    """The run record of a `runs` row (its RUN_COLUMNS)."""
    options = RunOptions(**json.loads(row["options"]))
    return RunRecord(row["id"], row["question"], options, row["created_at"], row["owner"])


# Named like the builtin on purpose, as sqlite_log.open: callers write `postgres_log.open(url)`.
async def open(
    url: str, *, cache_size: int = DEFAULT_CACHE_SIZE, shared: bool = False
) -> PostgresEventLog:
    """Open a pool on the database at `url` (migrating its schema) and a store on it.

    `shared`: other processes write runs to the same database (cluster mode).
    """
    pool = await open_pool(url)
    return PostgresEventLog(pool, cache_size=cache_size, owns_pool=True, shared=shared)


class PostgresEventLog:
    """Runs and events in PostgreSQL; the runs this process writes are served from memory.

    `append` keeps the event in memory, wakes the run's waiters and queues it for the next
    batch (one transaction every `flush_interval_s`). A `done` becomes visible only once it
    and every event before it are committed, as with the SQLite store. Finished runs are
    read back from the database, the last `cache_size` of them kept.
    """

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_max_events: int = DEFAULT_FLUSH_MAX_EVENTS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        cache_size: int = DEFAULT_CACHE_SIZE,
        owns_pool: bool = False,
        shared: bool = False,
    ) -> None:
        self.pool = pool
        self._owns_pool = owns_pool
        self.writer = EventWriter(
            pool,
            ends_executions=shared,
            flush_interval_s=flush_interval_s,
            flush_max_events=flush_max_events,
            max_pending_bytes=max_pending_bytes,
        )
        # Shared (cluster mode): other processes write runs too, so a run read back before its
        # done is not kept, and no run is "interrupted" only because this process is not
        # writing it; and a run's done ends its execution in the same transaction.
        self.shared = shared
        self._memory = RunMemory(
            cache_size=cache_size, load=self._select_run, cache_unfinished=not shared
        )
        self._appends = BufferedAppend(
            self._memory, self.writer, check_open=self._check_open, retire=self._memory.retire
        )
        self._closed = False

    @property
    def write_failure(self) -> StoreUnavailable | None:
        """Why the database takes no writes now, or None while it does."""
        return self.writer.failure

    @property
    def keys_path(self) -> Path | None:
        """None: with --store postgres, API keys come from --api-keys-file only."""
        return None

    @property
    def unflushed(self) -> int:
        """How many appended events are not yet committed."""
        return self.writer.unwritten

    async def create_run(self, record: RunRecord) -> None:
        """Store a new run record (committed before this returns); its log starts empty."""
        self._check_open()
        if self.writer.failure is not None and self.writer.unwritten:
            # Events wait for the database still: a row that happens to fit (a page with room
            # on a full disk, a table not locked) must not start a run its events cannot follow.
            raise self.writer.failure
        sql = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        options = json.dumps(record.options.to_dict())
        try:
            await self.pool.execute(
                sql, record.id, record.question, options, record.created_at, record.owner
            )
        except asyncpg.UniqueViolationError:
            raise ValueError(f"run {record.id} already exists") from None
        except ERRORS as exc:
            raise self.writer.failed(exc) from None
        self.writer.succeeded()
        self._memory.start(record)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's record, or None when there is no such run."""
        memory = self._memory.get(run_id)
        if memory is not None:
            return memory.record
        row = await self._query_one(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1", run_id)
        return None if row is None else record_of(row)

    async def list_runs(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        owner: str | None = None,
        unfinished: bool = False,
    ) -> list[RunRecord]:
        """Up to `limit` records, newest first, strictly older than `before`, of `owner`."""
        conditions: list[str] = []
        params: list[Any] = []
        if owner is not None:
            params.append(owner)
            conditions.append(f"owner = ${len(params)}")
        if before is not None:
            params += before
            conditions.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
        if unfinished:
            conditions.append("ended_at IS NULL")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs {where} "
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(params) + 1}"
        )
        return [record_of(row) for row in await self._query(sql, *params, limit)]

    async def tails(self, run_ids: Sequence[str]) -> dict[str, RunTail]:
        """Each known run's event count and ending: from memory, else summed up by the server."""
        found: dict[str, RunTail] = {}
        stored: list[str] = []
        for run_id in run_ids:
            run = self._memory.live.get(run_id)
            if run is not None:
                found[run_id] = tail_of(run.events)
            else:
                stored.append(run_id)
        if stored:
            # The server reads the done's JSON, so no answer is decoded here, however large.
            for run_id, seq, t_ms, status, code, sources, waits in await self._query(
                _TAILS, stored
            ):
                end = None if status is None else RunEnd(status, code, sources, t_ms)
                found[run_id] = RunTail(seq or 0, end, "plan_review" if waits else None)
        return found

    def writing(self, run_id: str) -> bool:
        """Whether this process writes the run now (its events are served from memory)."""
        return run_id in self._memory.live

    async def find(self, run_id: str) -> tuple[list[Row], bool] | None:
        """The run's events as this process has them or reads them back, and if it finished."""
        run = await self._memory.find(run_id)
        return None if run is None else (run.events, run.finished)

    def adopt(self, record: RunRecord) -> None:
        """Write a stored run whose log is empty (a cluster run claimed here): live in memory."""
        self._check_open()
        self._memory.start(record)

    async def resume(self, run_id: str) -> None:
        """Write to a stored run another process left open: its events read back, live here."""
        run = await self._memory.find(run_id)
        if run is None:
            raise KeyError(run_id)
        self._check_open()
        self._memory.revive(run_id, run)

    async def stored_events(self, run_id: str, *, after: int) -> list[Row] | None:
        """The run's committed events with seq > `after`, read now; None if the run is gone."""
        sql = (
            "SELECT e.run_id, e.seq, e.name, e.t_ms, e.wire FROM runs r LEFT JOIN events e "
            "ON e.run_id = r.id AND e.seq > $2 WHERE r.id = $1 ORDER BY e.seq"
        )
        rows = await self._query(sql, run_id, after)
        if not rows:
            return None
        return [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows if r[1] is not None]

    async def interrupted_runs(self) -> list[RunRecord]:
        """Stored runs without a `done` that this process is not running, oldest first.

        None in a shared store: there the cluster decides which runs were lost.
        """
        if self.shared:
            return []
        await self._record_missed_ends()
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE ended_at IS NULL ORDER BY created_at, id"
        rows = await self._query(sql)
        return [run for run in map(record_of, rows) if run.id not in self._memory.live]

    async def _record_missed_ends(self) -> None:
        """Record the ends a release before schema 5 stored while serving the migrated database.

        That is a rolling upgrade's; the statement goes along the open runs' index (few rows).
        """
        try:
            await self.pool.execute(RECORD_MISSED_ENDS)
        except ERRORS as exc:
            raise self.writer.failed(exc) from None

    async def prune(self, *, max_age_s: float | None, max_runs: int | None) -> int:
        """Delete finished runs older than `max_age_s` or beyond the newest `max_runs`.

        Runs still going (or left open, not yet ended) are never deleted. The runs past the
        limits are read and deleted PRUNE_BATCH at a time (runs/pruning.py): no statement
        looks at every run or runs long. Returns how many went.
        """

        async def newest_past(count: int) -> tuple[float, str] | None:
            sql = (
                "SELECT created_at, id FROM runs ORDER BY created_at DESC, id DESC "
                "LIMIT 1 OFFSET $1"
            )
            found = await self._query_one(sql, count)
            return None if found is None else (float(found[0]), str(found[1]))

        async def read_batch(prefix: Prefix, after: tuple[float, str]) -> list[asyncpg.Record]:
            sql = (
                "SELECT id, created_at, ended_at IS NOT NULL FROM runs "
                "WHERE (created_at, id) > ($1, $2) "
                f"AND (created_at, id) {prefix.operator} ($3, $4) ORDER BY created_at, id LIMIT $5"
            )
            return await self._query(sql, *after, *prefix.bound, PRUNE_BATCH)

        async def delete(run_ids: list[str]) -> None:
            try:
                await self.pool.execute("DELETE FROM runs WHERE id = ANY($1::text[])", run_ids)
            except ERRORS as exc:
                raise self.writer.failed(exc) from None

        await self._record_missed_ends()
        return await prune_past_limits(
            max_age_s=max_age_s,
            max_runs=max_runs,
            now=time.time(),
            newest_past=newest_past,
            read_batch=read_batch,
            delete=delete,
            memory=self._memory,
        )

    async def append(self, event: Event) -> None:
        """Append `event`, wake the run's waiters and queue the event for the next batch.

        A `done` returns only once it is committed, and only then do readers see it;
        StoreUnavailable if the store closes before it could be written.
        """
        if not self._appends.now(event):
            await self._appends.later(event)

    async def read(self, run_id: str, *, after: int, limit: int | None = None) -> list[Event]:
        """The run's stored events with seq > `after`, in order, at most `limit` of them."""
        return await self._memory.read(run_id, after=after, limit=limit)

    async def wait(self, run_id: str, *, after: int, timeout: float) -> bool:
        """Wait until the run has an event with seq > `after`; False on timeout."""
        return await self._memory.wait(run_id, after=after, timeout=timeout, closed=self._closed)

    async def flush(self) -> None:
        """Commit every event appended so far, now."""
        await self.writer.durable(urgent=True)

    async def check(self) -> None:
        """Raise StoreUnavailable unless the database answers and takes writes."""
        failure = self.writer.failure
        if failure is not None and self.writer.unwritten:
            raise failure  # events still wait for the database: it is not back yet
        try:
            row = await self.pool.fetchrow(
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'"
            )
            standby, read_only = (bool(row[0]), bool(row[1])) if row else (False, False)
        except ERRORS as exc:
            raise unavailable(exc) from None
        if read_only and not standby:
            # default_transaction_read_only on a primary: every write fails as it would there.
            raise StoreUnavailable(
                "the PostgreSQL run store is read-only (default_transaction_read_only); turn "
                "it off, or point --database-url at a database that takes writes",
                slug="store-read-only",
                retry_after=5,
            )
        if standby:
            raise StoreUnavailable(
                "the PostgreSQL run store is a read-only standby; point --database-url at the "
                "primary",
                slug="store-read-only",
                retry_after=5,
            )
        self.writer.succeeded()

    async def close(self) -> None:
        """Write what is queued (trying for CLOSE_TIMEOUT_S), close the pool, wake waiters."""
        if self._closed:
            return
        self._closed = True
        await self.writer.close(timeout=CLOSE_TIMEOUT_S)
        if self._owns_pool:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self.pool.close()
            except TimeoutError:
                self.pool.terminate()
        self._memory.waiters.wake_all()

    # --- memory and reads -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(
                "the PostgreSQL run store is closed", slug="store-closed", retry_after=1
            )

    async def _query(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await self.pool.fetch(sql, *args)
        except ERRORS as exc:
            raise unavailable(exc) from None

    async def _query_one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        rows = await self._query(sql, *args)
        return rows[0] if rows else None

    async def _select_run(self, run_id: str) -> tuple[RunRecord, list[Row]] | None:
        """The run's record and every event, read back from the database."""
        # No transaction: a record never changes and events are only appended, so the events
        # read after the record are its log as of then (two round trips instead of four).
        try:
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1", run_id)
                events = await conn.fetch(
                    "SELECT run_id, seq, name, t_ms, wire FROM events WHERE run_id = $1 "
                    "ORDER BY seq",
                    run_id,
                )
        except ERRORS as exc:
            raise unavailable(exc) from None
        if row is None:
            return None
        return record_of(row), [(r[0], r[1], r[2], r[3], bytes(r[4])) for r in events]
