"""The event-log contract, written once and run against every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from research_service.events import Event
from research_service.runs import sqlite_log
from research_service.runs.log import EventLog
from research_service.runs.memory_log import MemoryEventLog
from research_service.runs.models import RunEnd, RunOptions, RunRecord, RunTail

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
async def event_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventLog]:
    log: EventLog
    if request.param == "memory":
        log = MemoryEventLog()
    elif request.param == "sqlite":
        log = await sqlite_log.open(tmp_path / "runs.sqlite3")
    else:  # pragma: no cover - each new backend adds its branch here
        raise AssertionError(request.param)
    yield log
    await log.close()


def record(run_id: str, created_at: float) -> RunRecord:
    return RunRecord(run_id, f"question {run_id}", RunOptions(), created_at)


def event(run_id: str, seq: int, name: str = "token") -> Event:
    return Event.create(run_id, seq, name, {"text": f"piece {seq}"}, t_ms=seq)


async def test_create_and_get_run(event_log: EventLog) -> None:
    rec = record("a" * 16, 1.0)
    await event_log.create_run(rec)
    assert await event_log.get_run(rec.id) == rec
    assert await event_log.get_run("b" * 16) is None


async def test_read_after_returns_exactly_the_later_events(event_log: EventLog) -> None:
    run_id = "a" * 16
    await event_log.create_run(record(run_id, 1.0))
    assert await event_log.read(run_id, after=0) == []
    stored = [event(run_id, seq) for seq in range(1, 6)]
    for item in stored:
        await event_log.append(item)
    for after in range(6):
        got = await event_log.read(run_id, after=after)
        assert [e.seq for e in got] == list(range(after + 1, 6))
        assert [e.wire for e in got] == [e.wire for e in stored[after:]]


async def test_append_rejects_a_gap_or_a_repeat(event_log: EventLog) -> None:
    run_id = "a" * 16
    await event_log.create_run(record(run_id, 1.0))
    await event_log.append(event(run_id, 1))
    with pytest.raises(ValueError, match="seq"):
        await event_log.append(event(run_id, 3))
    with pytest.raises(ValueError, match="seq"):
        await event_log.append(event(run_id, 1))


async def test_runs_are_independent(event_log: EventLog) -> None:
    first, second = "a" * 16, "b" * 16
    await event_log.create_run(record(first, 1.0))
    await event_log.create_run(record(second, 2.0))
    await event_log.append(event(first, 1))
    assert await event_log.read(second, after=0) == []
    assert len(await event_log.read(first, after=0)) == 1


async def test_wait_returns_at_once_when_events_are_there(event_log: EventLog) -> None:
    run_id = "a" * 16
    await event_log.create_run(record(run_id, 1.0))
    await event_log.append(event(run_id, 1))
    async with asyncio.timeout(1):
        assert await event_log.wait(run_id, after=0, timeout=30)


async def test_wait_times_out_without_new_events(event_log: EventLog) -> None:
    run_id = "a" * 16
    await event_log.create_run(record(run_id, 1.0))
    await event_log.append(event(run_id, 1))
    assert not await event_log.wait(run_id, after=1, timeout=0.01)


async def test_wait_wakes_every_waiter_on_append(event_log: EventLog) -> None:
    run_id = "a" * 16
    await event_log.create_run(record(run_id, 1.0))
    waiters = [asyncio.create_task(event_log.wait(run_id, after=0, timeout=30)) for _ in range(20)]
    await asyncio.sleep(0)  # let every waiter start waiting before the append
    await event_log.append(event(run_id, 1))
    async with asyncio.timeout(2):
        assert all(await asyncio.gather(*waiters))


async def test_cancelling_one_waiter_leaves_the_others_waiting(event_log: EventLog) -> None:
    run_id = "a" * 16
    await event_log.create_run(record(run_id, 1.0))
    doomed = asyncio.create_task(event_log.wait(run_id, after=0, timeout=30))
    survivor = asyncio.create_task(event_log.wait(run_id, after=0, timeout=30))
    await asyncio.sleep(0)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await event_log.append(event(run_id, 1))
    async with asyncio.timeout(2):
        assert await survivor


async def test_list_runs_newest_first_with_before_cursor(event_log: EventLog) -> None:
    ids = [f"{n:016x}" for n in range(7)]
    for n, run_id in enumerate(ids):
        await event_log.create_run(record(run_id, 100.0 + n))
    page = await event_log.list_runs(limit=3)
    assert [r.id for r in page] == ids[::-1][:3]
    page2 = await event_log.list_runs(limit=3, before=page[-1].sort_key)
    assert [r.id for r in page2] == ids[::-1][3:6]
    page3 = await event_log.list_runs(limit=3, before=page2[-1].sort_key)
    assert [r.id for r in page3] == ids[:1]
    assert await event_log.list_runs(limit=3, before=page3[-1].sort_key) == []


async def test_list_runs_orders_same_timestamp_by_id(event_log: EventLog) -> None:
    for run_id in ("c" * 16, "a" * 16, "b" * 16):
        await event_log.create_run(record(run_id, 5.0))
    page = await event_log.list_runs(limit=2)
    assert [r.id for r in page] == ["c" * 16, "b" * 16]
    rest = await event_log.list_runs(limit=2, before=page[-1].sort_key)
    assert [r.id for r in rest] == ["a" * 16]


async def test_tails_give_counts_and_endings_without_reading_logs(event_log: EventLog) -> None:
    fresh, going, ended, failed = "a" * 16, "b" * 16, "c" * 16, "d" * 16
    for n, run_id in enumerate((fresh, going, ended, failed)):
        await event_log.create_run(record(run_id, float(n)))
    for run_id in (going, ended, failed):
        for seq in (1, 2):
            await event_log.append(event(run_id, seq))
    sources = [{"id": n, "title": "t", "url": "u", "snippet": "s\u2028\n"} for n in (1, 2, 3)]
    done = {
        "status": "completed",
        "answer": "A \u2028 [1]\n" * 1000,
        "sources": sources,
        "error": None,
    }
    await event_log.append(Event.create(ended, 3, "done", done, t_ms=1234))
    error = {"code": "llm_timeout", "message": "m"}
    failure = {"status": "failed", "answer": "", "sources": [], "error": error}
    await event_log.append(Event.create(failed, 3, "done", failure, t_ms=99))
    if isinstance(event_log, sqlite_log.SqliteEventLog):
        # Reopened, so the finished runs are asked of the file, not memory.
        await event_log.close()
        event_log = await sqlite_log.open(event_log.path)
    try:
        tails = await event_log.tails([fresh, going, ended, failed, "e" * 16])
    finally:
        if isinstance(event_log, sqlite_log.SqliteEventLog):
            await event_log.close()
    assert tails == {
        fresh: RunTail(0),
        going: RunTail(2),
        ended: RunTail(3, RunEnd("completed", None, 3, 1234)),
        failed: RunTail(3, RunEnd("failed", "llm_timeout", 0, 99)),
    }
