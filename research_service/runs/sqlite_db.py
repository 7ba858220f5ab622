"""The SQLite run store file: schema, statements and failures in words (worker-thread side)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Any, Final, TypeAlias, TypeVar

from research_service import sqlite_errors
from research_service.errors import ConfigError, StoreUnavailable
from research_service.own_thread import OwnThread
from research_service.runs.migrations import Outcome
from research_service.runs.models import RunEnd, RunOptions, RunRecord, RunTail
from research_service.runs.sqlite_schema import StepFailed, migrate
from research_service.runs.sqlite_segments import coalesce, expand

#: The SQLite run store's file under --data-dir (with --store sqlite).
RUN_STORE_FILE: Final = "runs.sqlite3"
T = TypeVar("T")

BUSY_TIMEOUT_S: Final = 5.0
#: A request refused because the store cannot write may succeed again after this long.
STORE_RETRY_AFTER_S: Final = 5

RUN_COLUMNS: Final = "id, question, options, created_at, owner"

# Exact tuples (run_id, seq, name, t_ms, wire): the column order of `events`, so a queued
# row goes into the INSERT as it is, and untracked by the cyclic collector (see memory_log).
Row: TypeAlias = tuple[str, int, str, int, bytes]

#: SQLite binds at most 32766 parameters per statement; tails are asked in chunks.
_MAX_IDS: Final = 500
#: Rows per INSERT of events, largest first. One statement is one sqlite3_step, and the worker
#: thread gives up the GIL around each step: executemany (a step a row) would hand the GIL to
#: the event loop and back once per event, which costs both threads more than the insert.
_INSERT_CHUNKS: Final = (256, 64, 16, 4, 1)
_INSERTS: Final = {
    size: "INSERT INTO events VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * size)
    for size in _INSERT_CHUNKS
}
#: A run's end, recorded with its `done` (t_ms: the done's time since the run started).
_RECORD_END: Final = "UPDATE runs SET ended_at = created_at + ? / 1000.0 WHERE id = ?"
# The done payload as text: the wire after its `\ndata: ` prefix (JSON ignores the final
# blank line). Every run has a row, with seq 0 and no end when it has no events yet.
_DONE_JSON: Final = "CAST(substr(e.wire, instr(e.wire, X'0a646174613a20') + 7) AS TEXT)"
_TAILS: Final = (
    "SELECT r.id, e.seq, e.t_ms, "
    f"CASE WHEN e.name = 'done' THEN json_extract({_DONE_JSON}, '$.status', '$.error.code') END, "
    f"CASE WHEN e.name = 'done' THEN json_array_length({_DONE_JSON}, '$.sources') END "
    "FROM runs r LEFT JOIN events e ON e.run_id = r.id "
    "AND e.seq = (SELECT max(seq) FROM events WHERE run_id = r.id) "
    "WHERE r.id IN ({marks})"
)

_IDS_PER_QUERY: Final = 500


def found_ids(
    db: sqlite3.Connection, query: str, ids: list[str], *, lock: threading.Lock
) -> set[str]:
    """The ids of `ids` that `query` finds, asked in chunks (`{marks}` stands for their `?`s).

    SQLite binds at most 32,766 parameters in one statement.
    """
    found: set[str] = set()
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        with lock:
            rows = db.execute(query.format(marks=", ".join("?" * len(chunk))), chunk).fetchall()
        found.update(row[0] for row in rows)
    return found


def record(row: tuple[Any, ...]) -> RunRecord:
    """A run record from a `runs` row."""
    run_id, question, options, created_at, owner = row
    return RunRecord(run_id, question, RunOptions(**json.loads(options)), created_at, owner)


def failure(path: Path, exc: sqlite3.Error | OSError) -> tuple[str, str]:
    """A slug naming why the store at `path` cannot write, and a message saying what to do."""
    code = sqlite_errors.primary_code(path, exc)
    if code == sqlite_errors.FULL:
        return "storage-full", f"the disk holding the run store {path} is full; free some space"
    if code in (sqlite_errors.READONLY, sqlite_errors.CANTOPEN):
        return "store-read-only", f"the run store {path} cannot be written; check its permissions"
    return "store-unavailable", f"the run store {path} cannot be written ({exc})"


def unavailable(path: Path, exc: sqlite3.Error | OSError) -> StoreUnavailable:
    """The StoreUnavailable a request gets when the store at `path` fails with `exc`."""
    slug, message = failure(path, exc)
    return StoreUnavailable(message, slug=slug, retry_after=STORE_RETRY_AFTER_S, advise_retry=True)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating it and its schema as needed) the store file; ConfigError if it cannot."""
    return _open(path)[0]


def upgrade(path: Path) -> Outcome:
    """Apply the migrations the store file still needs, and say what was done."""
    db, outcome = _open(path)
    db.close()
    return outcome


def _open(path: Path) -> tuple[sqlite3.Connection, Outcome]:
    try:
        return _connect(path)
    except StepFailed as exc:
        slug, message = failure(path, exc.cause)
        if slug == "store-unavailable":  # not the disk: the file is not what the step expects
            message = "restore the backup taken before the upgrade, or point --data-dir elsewhere"
        raise ConfigError(
            f"the run store {path}: {exc.step.describe()} failed ({exc.cause}) and was undone, "
            f"it is at schema {exc.version} as before; {message}"
        ) from None
    except (sqlite3.Error, OSError) as exc:
        _, message = failure(path, exc)
        raise ConfigError(f"{message}, or point --data-dir elsewhere") from None


def _create_private(path: Path) -> None:
    """Make a new store file readable by the service's user only (questions, answers, keys).

    SQLite gives its -wal and -shm files the same permissions. Only a file that does not
    exist yet is touched: closing any other descriptor of an open database file would drop
    the POSIX locks this process's connections hold on it.
    """
    if path.exists():
        return
    # FileExistsError: another process made it first.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _connect(path: Path) -> tuple[sqlite3.Connection, Outcome]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _create_private(path)
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
        outcome = migrate(db, path)
    except BaseException:
        db.close()
        raise
    return db, outcome


def _insert_events(db: sqlite3.Connection, events: list[Row]) -> None:
    batch = coalesce(events)
    start = 0
    for size in _INSERT_CHUNKS:
        while len(batch) - start >= size:
            db.execute(_INSERTS[size], list(chain.from_iterable(batch[start : start + size])))
            start += size
    # In the same transaction as the `done`s themselves (schema 6: the open runs' index).
    ends = [(row[3], row[0]) for row in batch if row[2] == "done"]
    if ends:
        db.executemany(_RECORD_END, ends)


def _statement(sql: str, params: tuple[Any, ...]) -> Callable[[sqlite3.Connection], object]:
    return lambda db: db.execute(sql, params)


def _rewrite_version(db: sqlite3.Connection) -> None:
    """Write the file's schema version again, unchanged: a write that changes nothing."""
    # Not this release's number: a newer release may have migrated the file meanwhile
    # (`migrate` runs beside `serve`), and releases before the migrations table read it.
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    db.execute(f"PRAGMA user_version = {version}")


class Database:
    """One connection, used from a thread of its own (`call`), one statement at a time.

    Not asyncio's default executor: that one also runs other blocking work (local searches,
    page extraction), and a run's insert or its durable `done` must never queue behind it.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._thread = OwnThread("run-store")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` (one of this object's methods) on the store's thread."""
        return await self._thread.call(function, *args)

    def insert_runs(self, rows: list[tuple[Any, ...]]) -> list[BaseException | None]:
        """Insert run records in one transaction: None for each stored, or its IntegrityError.

        When one row is refused (an id already taken) the rest are inserted one by one, so
        only that row fails. Other errors (a full disk) raise for all of them.
        """
        sql = f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        with self._lock:
            try:
                self._write(lambda db: db.executemany(sql, rows))
                return [None] * len(rows)
            except sqlite3.IntegrityError:
                if len(rows) == 1:
                    raise
            outcomes: list[BaseException | None] = []
            for row in rows:
                try:
                    self._write(_statement(sql, row))
                    outcomes.append(None)
                except sqlite3.IntegrityError as exc:
                    outcomes.append(exc)
            return outcomes

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        """Run one statement in its own transaction."""
        with self._lock:
            self._db.execute(sql, params)

    def query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The rows of one query."""
        with self._lock:
            rows: list[tuple[Any, ...]] = self._db.execute(sql, params).fetchall()
        return rows

    def tails(self, run_ids: list[str]) -> dict[str, RunTail]:
        """Each listed run's event count and, for a finished run, its done in brief.

        SQLite reads the done's JSON itself (json_extract), so no answer or source list
        is decoded into Python objects, however large the run.
        """
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(run_ids), _MAX_IDS):
            chunk = run_ids[start : start + _MAX_IDS]
            marks = ", ".join("?" * len(chunk))
            with self._lock:
                rows += self._db.execute(_TAILS.format(marks=marks), chunk).fetchall()
        tails: dict[str, RunTail] = {}
        for run_id, seq, t_ms, brief, sources in rows:
            end = None
            if brief is not None:
                status, error_code = json.loads(brief)
                end = RunEnd(status, error_code, sources or 0, t_ms)
            tails[run_id] = RunTail(seq or 0, end)
        return tails

    def delete_runs(self, run_ids: list[str]) -> None:
        """Delete runs and (ON DELETE CASCADE) their events, in one transaction."""
        with self._lock, self._db:
            self._db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in run_ids])

    def select_run(self, run_id: str) -> tuple[RunRecord, list[Row]] | None:
        """A run's record and every event of it, as one snapshot."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                row = self._db.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
                events: list[Row] = self._db.execute(
                    "SELECT run_id, seq, name, t_ms, wire FROM events WHERE run_id = ? "
                    "ORDER BY seq",
                    (run_id,),
                ).fetchall()
            finally:
                self._db.execute("COMMIT")
        return None if row is None else (record(row), expand(events))

    def insert_events(self, batch: list[Row]) -> None:
        """Commit a batch of events in one transaction, a few statements of many rows each."""
        with self._lock:
            self._write(lambda db: _insert_events(db, batch))

    def probe(self) -> None:
        """A real write that changes nothing: raises when the file cannot be written."""
        with self._lock:
            self._write(_rewrite_version)

    def close(self) -> None:
        """Close the connection; the store's thread ends once idle."""
        with self._lock:
            self._db.close()
        self._thread.close()

    def _write(self, write: Callable[[sqlite3.Connection], object]) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            write(self._db)
            self._db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT can leave the transaction open; the next write must begin anew.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
