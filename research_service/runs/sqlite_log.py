"""The SQLite event-log backend: events reach readers from memory and reach disk in batches."""

from __future__ import annotations

import asyncio
import json
import operator
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from research_service.errors import StoreUnavailable
from research_service.events import Event
from research_service.runs.batch_writer import (
    DEFAULT_FLUSH_INTERVAL_S,
    DEFAULT_FLUSH_MAX_EVENTS,
    DEFAULT_MAX_PENDING_BYTES,
)
from research_service.runs.buffered_append import BufferedAppend
from research_service.runs.group_commit import GroupCommit
from research_service.runs.migrations import RECORD_MISSED_ENDS
from research_service.runs.models import RunRecord, RunTail, tail_of
from research_service.runs.pruning import PRUNE_BATCH, Prefix, prune_past_limits
from research_service.runs.run_memory import MemoryRun, RunMemory
from research_service.runs.sqlite_db import (
    RUN_COLUMNS,
    RUN_STORE_FILE,
    Database,
    Row,
    connect,
    record,
)
from research_service.runs.sqlite_writer import EventWriter

__all__ = ["RUN_STORE_FILE", "SqliteEventLog", "open"]

DEFAULT_CACHE_SIZE: Final = 32
#: How long closing the store may try to write what is still queued.
CLOSE_TIMEOUT_S: Final = 1.0
#: How long a successful write proves the store writable to a readiness check.
PROBE_FRESH_S: Final = 5.0


# Named like the builtin on purpose: callers write `sqlite_log.open(path)`.
async def open(
    path: Path | str,
    *,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    flush_max_events: int = DEFAULT_FLUSH_MAX_EVENTS,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> SqliteEventLog:
    """Open (creating it and its schema as needed) the run store at `path`."""
    db = await asyncio.to_thread(connect, Path(path))
    return SqliteEventLog(
        Database(db),
        path=Path(path),
        flush_interval_s=flush_interval_s,
        flush_max_events=flush_max_events,
        max_pending_bytes=max_pending_bytes,
        cache_size=cache_size,
    )


_RUN_AND_SEQ: Final = operator.itemgetter(0, 1)


class SqliteEventLog:
    """Runs and events in one SQLite file; live runs are served from memory.

    `append` keeps the event in memory, wakes the run's waiters and queues it for the
    writer (see EventWriter). A `done` is different: it becomes visible only once it and
    every event before it are on disk, so no listener ever sees a run end that a restart
    would not show. A finished run leaves memory once it is on disk; older runs are read
    back from the file, the last `cache_size` of them kept.
    """

    def __init__(
        self,
        db: Database,
        *,
        path: Path,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_max_events: int = DEFAULT_FLUSH_MAX_EVENTS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.path = path
        self.db = db
        self.writer = EventWriter(
            db,
            path=path,
            on_written=self._batch_written,
            flush_interval_s=flush_interval_s,
            flush_max_events=flush_max_events,
            max_pending_bytes=max_pending_bytes,
        )
        self._memory = RunMemory(cache_size=cache_size, load=self._select_run)
        # Runs made at once (a burst of POSTs) are inserted together, one transaction.
        self._run_inserts: GroupCommit[tuple[Any, ...]] = GroupCommit(
            self._insert_runs, name=f"run inserts {path}"
        )
        self._appends = BufferedAppend(
            self._memory, self.writer, check_open=self._check_open, retire=self._retire
        )
        self._last_write_ok = float("-inf")
        self._closed = False

    @property
    def write_failure(self) -> StoreUnavailable | None:
        """Why the file takes no writes now, or None while it does."""
        return self.writer.failure

    @property
    def keys_path(self) -> Path:
        """The store's own file: the API keys live beside the runs."""
        return self.path

    @property
    def unflushed(self) -> int:
        """How many appended events are not yet committed to the file."""
        return self.writer.unwritten

    async def create_run(self, record: RunRecord) -> None:
        """Store a new run record (committed before this returns); its log starts empty.

        StoreUnavailable when the file cannot be written (a full disk).
        """
        self._check_open()
        row = (
            record.id,
            record.question,
            json.dumps(record.options.to_dict()),
            record.created_at,
            record.owner,
        )
        try:
            await self._run_inserts.commit(row)
        except sqlite3.IntegrityError:
            raise ValueError(f"run {record.id} already exists") from None
        except (sqlite3.Error, OSError) as exc:
            raise self._unwritable(exc) from None
        self._wrote()
        self._memory.start(record)

    async def _insert_runs(self, rows: list[tuple[Any, ...]]) -> list[BaseException | None]:
        return await self.db.call(self.db.insert_runs, rows)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's record, or None when there is no such run."""
        memory = self._memory.get(run_id)
        if memory is not None:
            return memory.record
        rows = await self.db.call(
            self.db.query, f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
        )
        return record(rows[0]) if rows else None

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
            conditions.append("owner = ?")
            params.append(owner)
        if before is not None:
            conditions.append("(created_at, id) < (?, ?)")
            params += before
        # The open runs' index by name: SQLite would take an owner's index, all their runs.
        index = "INDEXED BY runs_open" if unfinished else ""
        if unfinished:
            conditions.append("ended_at IS NULL")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs {index} {where} "
            "ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        rows = await self.db.call(self.db.query, sql, (*params, limit))
        return [record(row) for row in rows]

    async def tails(self, run_ids: Sequence[str]) -> dict[str, RunTail]:
        """Each known run's event count and ending: from memory, else summed up by SQLite."""
        found: dict[str, RunTail] = {}
        on_disk: list[str] = []
        for run_id in run_ids:
            run = self._memory.live.get(run_id)
            if run is not None:
                found[run_id] = tail_of(run.events)
            else:
                on_disk.append(run_id)
        if on_disk:
            rows = await self.db.call(self.db.tails, on_disk)
            found.update(rows)
        return found

    async def interrupted_runs(self) -> list[RunRecord]:
        """Runs on disk without a `done` that this process is not running, oldest first.

        They are the runs without an `ended_at` (the open runs' index, schema 6), once the
        ends an older release stored without it are recorded.
        """
        await self._record_missed_ends()
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE ended_at IS NULL ORDER BY created_at, id"
        rows = await self.db.call(self.db.query, sql, ())
        return [run for run in map(record, rows) if run.id not in self._memory.live]

    async def _record_missed_ends(self) -> None:
        """Record the ends a release before schema 6 stored while serving the migrated file."""
        try:
            await self.db.call(self.db.execute, RECORD_MISSED_ENDS, ())
        except (sqlite3.Error, OSError) as exc:
            raise self._unwritable(exc) from None

    async def prune(self, *, max_age_s: float | None, max_runs: int | None) -> int:
        """Delete finished runs older than `max_age_s` or beyond the newest `max_runs`.

        Runs still going (or left open, not yet ended) are never deleted. The runs past the
        limits are read and deleted PRUNE_BATCH at a time (runs/pruning.py), each batch a
        call of its own on the store's thread, so other calls run between. Returns how many
        went.
        """

        async def newest_past(count: int) -> tuple[float, str] | None:
            sql = (
                "SELECT created_at, id FROM runs ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?"
            )
            found = await self.db.call(self.db.query, sql, (count,))
            return (float(found[0][0]), str(found[0][1])) if found else None

        async def read_batch(prefix: Prefix, after: tuple[float, str]) -> list[tuple[Any, ...]]:
            sql = (
                "SELECT id, created_at, ended_at IS NOT NULL FROM runs "
                "WHERE (created_at, id) > (?, ?) "
                f"AND (created_at, id) {prefix.operator} (?, ?) ORDER BY created_at, id LIMIT ?"
            )
            return await self.db.call(self.db.query, sql, (*after, *prefix.bound, PRUNE_BATCH))

        async def delete(run_ids: list[str]) -> None:
            try:
                await self.db.call(self.db.delete_runs, run_ids)
            except (sqlite3.Error, OSError) as exc:
                raise self._unwritable(exc) from None

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
        """Append `event`, wake the run's waiters and queue the event for the writer.

        A `done` returns only once it is on disk, and only then do readers see it;
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
        """Commit every event appended so far to the file, now."""
        await self.writer.durable(urgent=True)

    async def wait_written(self) -> None:
        """Wait until every event appended so far is committed, at the writer's own pace."""
        await self.writer.durable(urgent=False)

    async def check(self) -> None:
        """Raise StoreUnavailable unless the file takes writes (a real write, if not recent)."""
        failure = self.writer.failure
        if failure is not None and self.writer.unwritten:
            raise failure  # events still wait for the disk: the writer's retries say when
        if failure is None and self._recently_written():
            return
        # Failing with nothing queued (a failed prune, or a write of a run since ended): only
        # a write says whether space is back, and behind a load balancer no request may come.
        try:
            await self.db.call(self.db.probe)
        except (sqlite3.Error, OSError) as exc:
            raise self._unwritable(exc) from None
        self._wrote()

    async def close(self) -> None:
        """Write what is queued (trying for CLOSE_TIMEOUT_S), close the file, wake waiters."""
        if self._closed:
            return
        self._closed = True
        await self.writer.close(timeout=CLOSE_TIMEOUT_S)
        await self.db.call(self.db.close)
        self._memory.waiters.wake_all()

    # --- memory ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(
                f"the run store {self.path} is closed", slug="store-closed", retry_after=1
            )

    def _unwritable(self, exc: sqlite3.Error | OSError) -> StoreUnavailable:
        """A write outside the writer failed: the store's health says so (once)."""
        return self.writer.failed(exc)

    def _wrote(self) -> None:
        self._last_write_ok = asyncio.get_running_loop().time()
        # Events still waiting for the disk mean the store is not back yet.
        self.writer.succeeded()

    def _recently_written(self) -> bool:
        return asyncio.get_running_loop().time() - self._last_write_ok < PROBE_FRESH_S

    def _retire(self, run_id: str, run: MemoryRun) -> None:
        """A finished run whose every event is on disk leaves the live set."""
        if run.finished and run.flushed == len(run.events):
            self._memory.retire(run_id, run)

    async def _select_run(self, run_id: str) -> tuple[RunRecord, list[Row]] | None:
        """The run's record and every event, read back from the file."""
        return await self.db.call(self.db.select_run, run_id)

    def _batch_written(self, batch: list[Row]) -> None:
        """The writer committed `batch`: note what each run has on disk."""
        self._last_write_ok = asyncio.get_running_loop().time()
        # The last seq per run: later rows of a run overwrite its earlier ones (C-level loop).
        last_seq: dict[str, int] = dict(map(_RUN_AND_SEQ, batch))
        for run_id, seq in last_seq.items():
            run = self._memory.live.get(run_id)
            if run is not None:
                run.flushed = max(run.flushed, seq)
                self._retire(run_id, run)
