"""What only the SQLite event log promises: persistence, batched writes, its file.

Its maintenance (interrupted runs, pruning) is pinned in test_event_log_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

import pytest

from research_service.auth.key_store import SqliteKeys
from research_service.errors import ConfigError
from research_service.events import Event
from research_service.runs import sqlite_log
from research_service.runs.models import RunOptions, RunRecord
from research_service.runs.run_memory import Row
from research_service.runs.sqlite_log import SqliteEventLog
from research_service.runs.sqlite_segments import expand

# Long enough that only `done`, a full batch, flush() or close() can trigger a write.
NEVER_S = 3600.0

#: `await open_log(**options)`: a store at the test's path (or `at=`), closed at the end.
OpenLog: TypeAlias = Callable[..., Awaitable[SqliteEventLog]]


def record(run_id: str, created_at: float) -> RunRecord:
    return RunRecord(run_id, f"question {run_id}", RunOptions(breadth=2, max_tokens=99), created_at)


def event(run_id: str, seq: int, name: str = "token") -> Event:
    data = {"status": "completed"} if name == "done" else {"text": f"piece {seq}"}
    return Event.create(run_id, seq, name, data, t_ms=seq * 10)


def rows_on_disk(path: Path, run_id: str | None = None) -> list[Row]:
    """The committed events, one row each (segments expanded), read as another process would."""
    sql = "SELECT run_id, seq, name, t_ms, wire FROM events"
    sql += " ORDER BY run_id, seq" if run_id is None else " WHERE run_id = ? ORDER BY seq"
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(sql, () if run_id is None else (run_id,)).fetchall()
    return expand(rows)


def events_on_disk(path: Path, run_id: str | None = None) -> int:
    """Count committed events with a connection of its own, as another process would."""
    return len(rows_on_disk(path, run_id))


async def until_written(log: SqliteEventLog) -> None:
    """Let the writer task commit what is queued, without asking it to flush."""
    async with asyncio.timeout(5):
        await log.wait_written()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "runs.sqlite3"


@pytest.fixture
async def open_log(path: Path) -> AsyncIterator[OpenLog]:
    """Opens stores at `path` (a test may close one and open the file again); all closed."""
    opened: list[SqliteEventLog] = []

    async def open_log(*, at: Path | None = None, **options: Any) -> SqliteEventLog:
        log = await sqlite_log.open(at or path, **options)
        opened.append(log)
        return log

    yield open_log
    for log in opened:
        await log.close()  # a no-op for a store the test closed itself


@pytest.fixture
async def lazy_log(open_log: OpenLog) -> SqliteEventLog:
    return await open_log(flush_interval_s=NEVER_S)


async def test_finished_runs_survive_close_and_reopen(open_log: OpenLog) -> None:
    log = await open_log()
    rec = record("a" * 16, 1.5)
    stored = [event(rec.id, 1), event(rec.id, 2), event(rec.id, 3, "done")]
    await log.create_run(rec)
    for item in stored:
        await log.append(item)
    await log.close()

    reopened = await open_log()
    assert await reopened.get_run(rec.id) == rec
    assert await reopened.list_runs(limit=10) == [rec]
    assert await reopened.read(rec.id, after=0) == stored
    assert await reopened.read(rec.id, after=2, limit=1) == stored[2:]
    async with asyncio.timeout(1):
        assert await reopened.wait(rec.id, after=2, timeout=30)
    assert not await reopened.wait(rec.id, after=3, timeout=0.01)
    assert await reopened.interrupted_runs() == []


async def test_appends_return_before_anything_is_written(
    lazy_log: SqliteEventLog, path: Path
) -> None:
    run_id = "a" * 16
    await lazy_log.create_run(record(run_id, 1.0))
    for seq in range(1, 11):
        await lazy_log.append(event(run_id, seq))
    assert events_on_disk(path) == 0
    assert lazy_log.unflushed == 10
    await lazy_log.flush()
    assert events_on_disk(path) == 10
    assert lazy_log.unflushed == 0


async def test_readers_get_events_before_they_are_written(
    lazy_log: SqliteEventLog, path: Path
) -> None:
    run_id = "a" * 16
    await lazy_log.create_run(record(run_id, 1.0))
    waiter = asyncio.create_task(lazy_log.wait(run_id, after=0, timeout=30))
    await asyncio.sleep(0)  # the waiter is waiting before the append
    first = event(run_id, 1)
    await lazy_log.append(first)
    async with asyncio.timeout(1):
        assert await waiter
    assert await lazy_log.read(run_id, after=0) == [first]
    assert events_on_disk(path) == 0


async def test_a_done_is_written_without_waiting_for_the_interval(
    lazy_log: SqliteEventLog, path: Path
) -> None:
    run_id = "a" * 16
    await lazy_log.create_run(record(run_id, 1.0))
    await lazy_log.append(event(run_id, 1))
    await lazy_log.append(event(run_id, 2, "done"))
    await until_written(lazy_log)
    assert events_on_disk(path) == 2


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    open_log: OpenLog, path: Path
) -> None:
    log = await open_log(flush_interval_s=NEVER_S, flush_max_events=5)
    run_id = "a" * 16
    await log.create_run(record(run_id, 1.0))
    for seq in range(1, 6):
        await log.append(event(run_id, seq))
    await until_written(log)
    assert events_on_disk(path) == 5


async def test_events_are_written_within_the_flush_interval(open_log: OpenLog, path: Path) -> None:
    log = await open_log(flush_interval_s=0.01)
    run_id = "a" * 16
    await log.create_run(record(run_id, 1.0))
    await log.append(event(run_id, 1))
    await until_written(log)
    assert events_on_disk(path) == 1


async def test_close_writes_what_is_queued(lazy_log: SqliteEventLog, path: Path) -> None:
    run_id = "a" * 16
    await lazy_log.create_run(record(run_id, 1.0))
    await lazy_log.append(event(run_id, 1))
    await lazy_log.close()
    assert events_on_disk(path) == 1


async def test_runs_are_created_on_disk_before_create_run_returns(
    lazy_log: SqliteEventLog, open_log: OpenLog
) -> None:
    rec = record("a" * 16, 1.0)
    await lazy_log.create_run(rec)
    reader = await open_log()
    assert await reader.get_run(rec.id) == rec


def count_groups(log: SqliteEventLog) -> list[int]:
    """The size of each group of runs the store inserts from now on (a spy on the real call)."""
    groups: list[int] = []
    insert_runs = log.db.insert_runs

    def counted(rows: list[tuple[Any, ...]]) -> list[BaseException | None]:
        groups.append(len(rows))
        return insert_runs(rows)

    log.db.insert_runs = counted  # type: ignore[method-assign]
    return groups


async def test_runs_created_at_once_are_inserted_together(open_log: OpenLog) -> None:
    """Group commit: a burst of runs takes a few transactions, not one per run."""
    log = await open_log()
    groups = count_groups(log)
    records = [record(f"{n:016x}", float(n)) for n in range(200)]
    await asyncio.gather(*(log.create_run(each) for each in records))
    assert sum(groups) == 200
    assert len(groups) <= 3, groups
    reader = await open_log()
    assert {each.id for each in await reader.list_runs(limit=500)} == {r.id for r in records}


async def test_a_taken_id_fails_alone_in_its_group(open_log: OpenLog) -> None:
    log = await open_log()
    await log.create_run(record("f" * 16, 0.0))
    groups = count_groups(log)
    fresh = [record(f"{n:016x}", float(n)) for n in range(1, 50)]
    outcomes = await asyncio.gather(
        *(log.create_run(each) for each in [*fresh, record("f" * 16, 9.0)]),
        return_exceptions=True,
    )
    assert outcomes[:-1] == [None] * len(fresh)
    assert isinstance(outcomes[-1], ValueError)
    assert "already exists" in str(outcomes[-1])
    assert max(groups) > 1  # the taken id was in a group with others
    reader = await open_log()
    assert len(await reader.list_runs(limit=500)) == 50


async def test_a_finished_run_leaves_memory_once_written(open_log: OpenLog, path: Path) -> None:
    """With no cache, a written finished run is read back from the file, not from memory."""
    log = await open_log(cache_size=0)
    run_id = "a" * 16
    await log.create_run(record(run_id, 1.0))
    await log.append(event(run_id, 1))
    await log.append(event(run_id, 2, "done"))
    await log.flush()
    assert len(await log.read(run_id, after=0)) == 2
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM events WHERE seq = 1")
    db.close()
    assert [e.seq for e in await log.read(run_id, after=0)] == [2]


async def test_a_running_run_stays_in_memory_after_its_events_are_written(
    open_log: OpenLog, path: Path
) -> None:
    log = await open_log(cache_size=0)
    run_id = "a" * 16
    await log.create_run(record(run_id, 1.0))
    await log.append(event(run_id, 1))
    await log.flush()
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM events")
    db.close()
    assert len(await log.read(run_id, after=0)) == 1
    await log.append(event(run_id, 2))


async def test_an_interrupted_run_can_be_ended_after_a_restart(
    open_log: OpenLog, path: Path
) -> None:
    log = await open_log()
    rec = record("a" * 16, 1.0)
    await log.create_run(rec)
    await log.append(event(rec.id, 1))
    await log.close()

    reopened = await open_log(flush_interval_s=NEVER_S)
    waiter = asyncio.create_task(reopened.wait(rec.id, after=1, timeout=30))
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="seq"):
        await reopened.append(event(rec.id, 1))
    await reopened.append(event(rec.id, 2, "done"))
    async with asyncio.timeout(1):
        assert await waiter
    await until_written(reopened)
    assert events_on_disk(path, rec.id) == 2
    assert await reopened.interrupted_runs() == []


async def test_listing_pages_through_old_and_new_runs(open_log: OpenLog) -> None:
    log = await open_log()
    old = [record(f"{n:016x}", 100.0 + n) for n in range(3)]
    for rec in old:
        await log.create_run(rec)
    await log.close()

    reopened = await open_log()
    new = [record(f"{n:016x}", 100.0 + n) for n in range(3, 5)]
    for rec in new:
        await reopened.create_run(rec)
    page = await reopened.list_runs(limit=3)
    rest = await reopened.list_runs(limit=3, before=page[-1].sort_key)
    assert page + rest == (old + new)[::-1]


async def test_a_stored_run_id_cannot_be_created_again(open_log: OpenLog) -> None:
    log = await open_log()
    await log.create_run(record("a" * 16, 1.0))
    await log.close()
    reopened = await open_log()
    with pytest.raises(ValueError, match="already exists"):
        await reopened.create_run(record("a" * 16, 2.0))


async def test_unknown_runs_are_none_or_key_errors(lazy_log: SqliteEventLog) -> None:
    assert await lazy_log.get_run("f" * 16) is None
    with pytest.raises(KeyError):
        await lazy_log.read("f" * 16, after=0)
    with pytest.raises(KeyError):
        await lazy_log.append(event("f" * 16, 1))


async def test_concurrent_readers_of_a_stored_run_all_get_its_events(open_log: OpenLog) -> None:
    log = await open_log()
    rec = record("a" * 16, 1.0)
    await log.create_run(rec)
    stored = [event(rec.id, seq) for seq in range(1, 4)]
    for item in stored:
        await log.append(item)
    await log.close()

    reopened = await open_log()
    reads = await asyncio.gather(*(reopened.read(rec.id, after=0) for _ in range(10)))
    assert reads == [stored] * 10


async def test_a_file_of_another_schema_version_is_refused(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        await sqlite_log.open(path)


async def test_the_file_uses_wal(lazy_log: SqliteEventLog, path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_new_store_file_is_readable_by_its_owner_only(
    open_log: OpenLog, tmp_path: Path
) -> None:
    path = tmp_path / "new" / "runs.sqlite3"
    log = await open_log(at=path)
    await log.create_run(record("a" * 16, 1.0))
    await log.flush()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_name("runs.sqlite3-wal").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def _keys(data_dir: Path, *args: str) -> str:
    """`research-service keys ...` in another process, as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "research_service", "keys", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


async def test_a_second_connection_in_the_process_keeps_the_firsts_view_fresh(
    open_log: OpenLog, tmp_path: Path
) -> None:
    """Opening the store again (the key store does) must not drop the first one's locks, or
    another process's writes go unseen (a revoked key would still be taken)."""
    path = tmp_path / "runs.sqlite3"
    log = await open_log(at=path)
    with contextlib.closing(SqliteKeys(path)) as keys:
        key = _keys(tmp_path, "create", "alice").splitlines()[-1]
        key_id = key.split("_")[1]
        assert keys.find(key_id) is not None
        keys.touch(key_id)
        _keys(tmp_path, "revoke", "alice")
        assert keys.find(key_id) is None
        await log.create_run(record("b" * 16, 2.0))
        assert await log.get_run("b" * 16) is not None


@pytest.mark.parametrize("count", [1, 5, 341, 1000])
async def test_a_batch_of_any_size_is_stored_whole_and_in_order(
    open_log: OpenLog, path: Path, count: int
) -> None:
    """A batch is inserted a few statements of many rows each (256, 64, 16, 4, 1)."""
    log = await open_log(flush_interval_s=NEVER_S, flush_max_events=count)
    await log.create_run(record("0123456789abcdef", 1.0))
    appended = [event("0123456789abcdef", seq) for seq in range(1, count + 1)]
    for each in appended:
        await log.append(each)
    await until_written(log)
    assert rows_on_disk(path) == [tuple(each) for each in appended]
