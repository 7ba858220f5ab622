"""The SQLite event-log backend: events reach readers from memory and reach disk in batches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

from research_service.errors import ConfigError
from research_service.events import Event
from research_service.runs.models import RunOptions, RunRecord

log = logging.getLogger(__name__)

#: The SQLite run store's file under --data-dir (with --store sqlite).
RUN_STORE_FILE: Final = "runs.sqlite3"

SCHEMA_VERSION: Final = 1
DEFAULT_FLUSH_INTERVAL_S: Final = 0.05
DEFAULT_FLUSH_MAX_EVENTS: Final = 500
DEFAULT_CACHE_SIZE: Final = 32
BUSY_TIMEOUT_S: Final = 5.0
RETRY_DELAY_S: Final = 1.0

SCHEMA: Final = (
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
)
_RUN_COLUMNS: Final = "id, question, options, created_at"
_LAST_EVENT: Final = "(SELECT name FROM events WHERE run_id = runs.id ORDER BY seq DESC LIMIT 1)"

# Exact tuples (run_id, seq, name, t_ms, wire): the column order of `events`, so a queued
# row goes to executemany as it is, and untracked by the cyclic collector (see memory_log).
_Row: TypeAlias = tuple[str, int, str, int, bytes]


@dataclass(slots=True)
class _RunLog:
    record: RunRecord
    events: list[_Row]
    # Events of this run already committed to the file.
    flushed: int = 0
    finished: bool = False


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _record(row: tuple[Any, ...]) -> RunRecord:
    run_id, question, options, created_at = row
    return RunRecord(run_id, question, RunOptions(**json.loads(options)), created_at)


# Named like the builtin on purpose: callers write `sqlite_log.open(path)`.
async def open(
    path: Path | str,
    *,
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
    flush_max_events: int = DEFAULT_FLUSH_MAX_EVENTS,
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> SqliteEventLog:
    """Open (creating it and its schema as needed) the run store at `path`."""
    db = await asyncio.to_thread(_connect, Path(path))
    return SqliteEventLog(
        db,
        path=Path(path),
        flush_interval_s=flush_interval_s,
        flush_max_events=flush_max_events,
        cache_size=cache_size,
    )


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
    )
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise ConfigError(f"{path} cannot use WAL journaling ({mode}); put it on a local disk")
        # WAL with NORMAL: a committed batch survives the process crashing (the promise made
        # here); only a power cut or OS crash can lose the last commits. FULL would add an
        # fsync to every batch and to every new run (milliseconds on POST /v1/runs).
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise ConfigError(
                f"the run store {path} has schema version {version}, this release writes "
                f"{SCHEMA_VERSION}; move the file aside or point --data-dir elsewhere"
            )
        for statement in SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.close()
        raise
    return db


class SqliteEventLog:
    """Runs and events in one SQLite file; live runs are served from memory.

    `append` keeps the event in memory, wakes the run's waiters and queues it; a writer task
    commits the queue in batches from a worker thread, every `flush_interval_s`, at
    `flush_max_events` queued events, or at once when a `done` is queued. A finished run
    leaves memory once it is on disk; older runs are read back from the file, the last
    `cache_size` of them kept.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        path: Path,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        flush_max_events: int = DEFAULT_FLUSH_MAX_EVENTS,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.path = path
        self._db = db
        # One connection, used only from worker threads, one at a time.
        self._db_lock = threading.Lock()
        self._flush_interval_s = flush_interval_s
        self._flush_max_events = flush_max_events
        self._cache_size = cache_size
        # Runs with events not yet on disk, or not finished: memory is their truth.
        self._live: dict[str, _RunLog] = {}
        # Finished runs read back (or just written), least recently used first.
        self._cache: OrderedDict[str, _RunLog] = OrderedDict()
        self._loading: dict[str, asyncio.Task[_RunLog | None]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._pending: list[_Row] = []
        self._queued_total = 0
        self._written_total = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._queued = asyncio.Event()
        self._urgent = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def unflushed(self) -> int:
        """How many appended events are not yet committed to the file."""
        return self._queued_total - self._written_total

    async def create_run(self, record: RunRecord) -> None:
        """Store a new run record (committed before this returns); its log starts empty."""
        self._check_open()
        row = (record.id, record.question, json.dumps(record.options.to_dict()), record.created_at)
        try:
            await asyncio.to_thread(self._execute, "INSERT INTO runs VALUES (?, ?, ?, ?)", row)
        except sqlite3.IntegrityError:
            raise ValueError(f"run {record.id} already exists") from None
        self._live[record.id] = _RunLog(record, [])

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's record, or None when there is no such run."""
        memory = self._in_memory(run_id)
        if memory is not None:
            return memory.record
        rows = await asyncio.to_thread(
            self._query, f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
        )
        return _record(rows[0]) if rows else None

    async def list_runs(
        self, *, limit: int, before: tuple[float, str] | None = None
    ) -> list[RunRecord]:
        """Up to `limit` records, newest first, strictly older than `before`."""
        where: str = ""
        params: tuple[Any, ...] = (limit,)
        if before is not None:
            where, params = "WHERE (created_at, id) < (?, ?)", (*before, limit)
        sql = f"SELECT {_RUN_COLUMNS} FROM runs {where} ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await asyncio.to_thread(self._query, sql, params)
        return [_record(row) for row in rows]

    async def interrupted_runs(self) -> list[RunRecord]:
        """Runs on disk without a `done` that this process is not running, oldest first."""
        sql = (
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE coalesce({_LAST_EVENT}, '') != 'done' "
            "ORDER BY created_at, id"
        )
        rows = await asyncio.to_thread(self._query, sql, ())
        return [record for record in map(_record, rows) if record.id not in self._live]

    async def prune(self, *, max_age_s: float | None, max_runs: int | None) -> int:
        """Delete finished runs older than `max_age_s` or beyond the newest `max_runs`.

        Runs still going (or left open, not yet ended) are never deleted. The deleting runs
        in a worker thread, so requests are never blocked by it. Returns how many went.
        """
        cutoff = time.time() - max_age_s if max_age_s is not None else float("-inf")
        keep = -1 if max_runs is None else max_runs  # LIMIT -1: keep every run
        sql = (
            f"SELECT id FROM runs WHERE {_LAST_EVENT} = 'done' AND (created_at < ? OR id NOT IN "
            "(SELECT id FROM runs ORDER BY created_at DESC, id DESC LIMIT ?))"
        )
        rows = await asyncio.to_thread(self._query, sql, (cutoff, keep))
        doomed = [str(row[0]) for row in rows if row[0] not in self._live]
        if doomed:
            await asyncio.to_thread(self._delete_runs, doomed)
            for run_id in doomed:
                self._cache.pop(run_id, None)
        return len(doomed)

    async def append(self, event: Event) -> None:
        """Append `event`, wake the run's waiters and queue the event for the writer."""
        self._check_open()
        run = self._live.get(event.run_id)
        if run is None:
            run = await self._find(event.run_id)
            if run is None:
                raise KeyError(event.run_id)
            self._check_open()  # the log may have closed while the run was read back
            # A stored run written to again (an interrupted run being ended): live once more.
            self._cache.pop(event.run_id, None)
            self._live[event.run_id] = run
        if event.seq != len(run.events) + 1:
            raise ValueError(f"event seq {event.seq} does not follow {len(run.events)}")
        row: _Row = tuple.__new__(tuple, event)
        run.events.append(row)
        waiters = self._waiters.pop(event.run_id, None)
        if waiters:
            for waiter in waiters:
                _resolve(waiter)
        self._pending.append(row)
        self._queued_total += 1
        self._queued.set()
        if event.name == "done":
            run.finished = True
            self._urgent.set()
        elif len(self._pending) >= self._flush_max_events:
            self._urgent.set()
        self._ensure_writer()

    async def read(self, run_id: str, *, after: int, limit: int | None = None) -> list[Event]:
        """The run's stored events with seq > `after`, in order, at most `limit` of them."""
        run = self._in_memory(run_id) or await self._find(run_id)
        if run is None:
            raise KeyError(run_id)
        events = run.events
        stored = events[after:] if limit is None else events[after : after + limit]
        return [Event._make(row) for row in stored]

    async def wait(self, run_id: str, *, after: int, timeout: float) -> bool:
        """Wait until the run has an event with seq > `after`; False on timeout."""
        run = self._in_memory(run_id) or await self._find(run_id)
        if run is None:
            raise KeyError(run_id)
        if len(run.events) > after or self._closed:
            return len(run.events) > after
        # One future per waiter: cancelling a waiter must never cancel anyone else's wait.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.setdefault(run_id, set())
        waiters.add(waiter)
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            waiters.discard(waiter)
            if not waiters and self._waiters.get(run_id) is waiters:
                del self._waiters[run_id]
        # Appends go to the run's current in-memory log, which may be a fresh copy by now.
        current = self._in_memory(run_id) or run
        return len(current.events) > after

    async def flush(self) -> None:
        """Commit every event appended so far to the file, now."""
        if self.unflushed:
            self._urgent.set()
        await self.wait_written()

    async def wait_written(self) -> None:
        """Wait until every event appended so far is committed, at the writer's own pace."""
        target = self._queued_total
        if self._written_total >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, future))
        self._ensure_writer()
        await future

    async def close(self) -> None:
        """Commit what is queued, close the file and wake every waiter."""
        if self._closed:
            return
        self._closed = True
        try:
            await self.flush()
        finally:
            if self._writer is not None:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
            await asyncio.to_thread(self._close_db)
            for waiters in self._waiters.values():
                for waiter in waiters:
                    _resolve(waiter)

    # --- memory ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the event log {self.path} is closed")

    def _in_memory(self, run_id: str) -> _RunLog | None:
        run = self._live.get(run_id)
        if run is None:
            run = self._cache.get(run_id)
            if run is not None:
                self._cache.move_to_end(run_id)
        return run

    def _remember(self, run_id: str, run: _RunLog) -> None:
        self._cache[run_id] = run
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _find(self, run_id: str) -> _RunLog | None:
        """The run's log from memory, else read back from the file (once for all callers)."""
        run = self._in_memory(run_id)
        if run is not None:
            return run
        task = self._loading.get(run_id)
        if task is None:
            task = asyncio.create_task(self._load(run_id))
            self._loading[run_id] = task
            task.add_done_callback(lambda _: self._loading.pop(run_id, None))
        # Shielded: a reader that gives up must not cancel the load other readers await.
        return await asyncio.shield(task)

    async def _load(self, run_id: str) -> _RunLog | None:
        stored = await asyncio.to_thread(self._select_run, run_id)
        run = self._in_memory(run_id)
        if run is not None or stored is None:
            return run
        record, events = stored
        run = _RunLog(record, events, flushed=len(events))
        run.finished = bool(events) and events[-1][2] == "done"
        self._remember(run_id, run)
        return run

    # --- the writer ------------------------------------------------------------------------

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name=f"sqlite-log {self.path}")
            self._writer.add_done_callback(self._writer_ended)

    def _writer_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("the writer of %s failed", self.path, exc_info=error)
            self._fail_flushes(error)

    async def _write_loop(self) -> None:
        while True:
            await self._queued.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval_s):
                        await self._urgent.wait()
            batch, self._pending = self._pending, []
            self._queued.clear()
            self._urgent.clear()
            try:
                await asyncio.to_thread(self._insert_events, batch)
            except sqlite3.Error as exc:
                log.exception("writing %d events to %s failed; retrying", len(batch), self.path)
                self._pending[:0] = batch
                self._queued.set()
                self._fail_flushes(exc)
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            self._written_total += len(batch)
            self._batch_written(batch)

    def _batch_written(self, batch: list[_Row]) -> None:
        last_seq = {run_id: seq for run_id, seq, *_ in batch}
        for run_id, seq in last_seq.items():
            run = self._live.get(run_id)
            if run is None:
                continue
            run.flushed = max(run.flushed, seq)
            if run.finished and run.flushed == len(run.events):
                del self._live[run_id]
                self._remember(run_id, run)
        still_waiting = []
        for target, future in self._flush_waiters:
            if target <= self._written_total:
                _resolve(future)
            elif not future.done():
                still_waiting.append((target, future))
        self._flush_waiters = still_waiting

    def _fail_flushes(self, error: BaseException) -> None:
        for _, future in self._flush_waiters:
            if not future.done():
                future.set_exception(error)
        self._flush_waiters = []

    # --- worker-thread side ----------------------------------------------------------------

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._db_lock:
            self._db.execute(sql, params)

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._db_lock:
            rows: list[tuple[Any, ...]] = self._db.execute(sql, params).fetchall()
        return rows

    def _delete_runs(self, run_ids: list[str]) -> None:
        with self._db_lock, self._db:
            # Events go with their run (ON DELETE CASCADE).
            self._db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in run_ids])

    def _select_run(self, run_id: str) -> tuple[RunRecord, list[_Row]] | None:
        with self._db_lock:
            # One read transaction, so the record and its events are one snapshot.
            self._db.execute("BEGIN")
            try:
                row = self._db.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
                events: list[_Row] = self._db.execute(
                    "SELECT run_id, seq, name, t_ms, wire FROM events WHERE run_id = ? "
                    "ORDER BY seq",
                    (run_id,),
                ).fetchall()
            finally:
                self._db.execute("COMMIT")
        return None if row is None else (_record(row), events)

    def _insert_events(self, batch: list[_Row]) -> None:
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", batch)
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT can leave the transaction open; the next batch must begin anew.
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _close_db(self) -> None:
        with self._db_lock:
            self._db.close()
