"""The event-log contract, written once and run against every backend; retention too; the
maintenance interface against every backend that offers it; the waiters every backend wakes
readers with."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeAlias

import pytest

from research_service.auth.key_store import SqliteKeys
from research_service.events import Event
from research_service.runs import postgres_log, sqlite_log
from research_service.runs.log import EventLog, Prunable, StoreMaintenance
from research_service.runs.memory_log import MemoryEventLog
from research_service.runs.models import RunEnd, RunOptions, RunRecord, RunTail
from research_service.runs.pruning import PRUNE_BATCH
from research_service.runs.waiters import Waiters
from tests import postgres

BACKENDS = ["memory", "sqlite", "postgres"]
#: The backends whose data outlives the process: they offer StoreMaintenance.
DURABLE = ["sqlite", "postgres"]
# A database for the module, a schema per test: asked for only by the postgres cases.
postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

#: `await open_store()`: the durable backend's store over the test's data, as after a restart.
OpenStore: TypeAlias = Callable[[], Awaitable[EventLog]]


async def open_backend(name: str, place: Path | str) -> EventLog:
    """A store of backend `name` keeping its data in `place` (a directory, or a database URL)."""
    if name == "memory":
        return MemoryEventLog()
    if name == "sqlite":
        assert isinstance(place, Path)
        return await sqlite_log.open(place / "runs.sqlite3")
    if name == "postgres":
        return await postgres_log.open(str(place))
    raise AssertionError(name)  # pragma: no cover - each new backend adds its branch here


def place_of(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where the test's store of backend `name` keeps its data (a Postgres one: a new schema)."""
    if name == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return tmp_path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def event_log(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[EventLog]:
    log = await open_backend(backend, place_of(backend, request, tmp_path))
    yield log
    await log.close()


@pytest.fixture(params=DURABLE)
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens the backend's store over the same data each time; every one closed at the end."""
    opened: list[EventLog] = []
    place = place_of(str(request.param), request, tmp_path)

    async def open_store() -> EventLog:
        log = await open_backend(str(request.param), place)
        opened.append(log)
        return log

    yield open_store
    for log in opened:
        await log.close()  # closing twice is allowed: a test may close a store itself


def maintenance(log: EventLog) -> StoreMaintenance:
    assert isinstance(log, StoreMaintenance)
    return log


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


async def test_close_wakes_every_waiter(event_log: EventLog) -> None:
    run_id = "a" * 16
    await event_log.create_run(record(run_id, 1.0))
    waiters = [asyncio.create_task(event_log.wait(run_id, after=0, timeout=30)) for _ in range(3)]
    await asyncio.sleep(0)
    await event_log.close()
    async with asyncio.timeout(2):
        assert await asyncio.gather(*waiters) == [False] * 3


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


async def test_the_unfinished_listing_is_the_runs_without_a_done_newest_first(
    event_log: EventLog,
) -> None:
    """What `GET /v1/runs?awaiting=…` walks: only the runs going, found by an index."""
    owners = {"a": "alice", "b": "alice", "c": "bob", "d": "alice", "e": None}
    records = {
        n: RunRecord(n * 16, f"question {n}", RunOptions(), float(i), owner)
        for i, (n, owner) in enumerate(owners.items(), start=1)
    }
    for rec in records.values():
        await event_log.create_run(rec)
    for n in "ad":
        await event_log.append(Event.create(records[n].id, 1, "done", {"status": "failed"}, t_ms=1))
    await event_log.append(event(records["b"].id, 1))
    flush = getattr(event_log, "flush", None)
    if flush is not None:  # the durable stores: the listing reads what is committed
        await flush()

    def ids(found: list[RunRecord]) -> str:
        return "".join(rec.id[0] for rec in found)

    assert ids(await event_log.list_runs(limit=10, unfinished=True)) == "ecb"
    assert ids(await event_log.list_runs(limit=2, unfinished=True)) == "ec"
    before = records["c"].sort_key
    assert ids(await event_log.list_runs(limit=10, before=before, unfinished=True)) == "b"
    assert ids(await event_log.list_runs(limit=10, owner="alice", unfinished=True)) == "b"
    assert ids(await event_log.list_runs(limit=10, owner="carol", unfinished=True)) == ""
    # Unfiltered, every run is listed as before.
    assert ids(await event_log.list_runs(limit=10)) == "edcba"

    await event_log.append(
        Event.create(records["b"].id, 2, "done", {"status": "completed"}, t_ms=2)
    )
    if flush is not None:
        await flush()
    assert ids(await event_log.list_runs(limit=10, owner="alice", unfinished=True)) == ""
    assert ids(await event_log.list_runs(limit=10, unfinished=True)) == "ec"


# --- StoreMaintenance: what the durable backends add ---------------------------------------


def test_maintenance_is_offered_by_the_durable_backends(event_log: EventLog, backend: str) -> None:
    assert isinstance(event_log, StoreMaintenance) == (backend in DURABLE)


async def test_a_fresh_store_takes_writes(open_store: OpenStore) -> None:
    store = maintenance(await open_store())
    assert store.write_failure is None


async def test_interrupted_runs_are_stored_runs_without_a_done(open_store: OpenStore) -> None:
    log = await open_store()
    finished, running, queued = record("a" * 16, 1.0), record("b" * 16, 2.0), record("c" * 16, 3.0)
    for rec in (finished, running, queued):
        await log.create_run(rec)
    await log.append(Event.create(finished.id, 1, "done", {"status": "completed"}, t_ms=1))
    await log.append(event(running.id, 1))
    # Runs of this process are not interrupted: they are still going.
    assert await maintenance(log).interrupted_runs() == []
    await log.close()

    restarted = await open_store()
    assert await maintenance(restarted).interrupted_runs() == [running, queued]


async def test_an_interrupted_run_once_ended_is_interrupted_no_more(
    open_store: OpenStore,
) -> None:
    log = await open_store()
    rec = record("a" * 16, 1.0)
    await log.create_run(rec)
    await log.append(event(rec.id, 1))
    await log.close()

    restarted = await open_store()
    ending = Event.create(rec.id, 2, "done", {"status": "failed"}, t_ms=2)
    await restarted.append(ending)
    assert await maintenance(restarted).interrupted_runs() == []
    assert [e.name for e in await restarted.read(rec.id, after=0)] == ["token", "done"]
    await restarted.close()
    assert await maintenance(await open_store()).interrupted_runs() == []


def stored_ends(backend: str, place: Path | str, *, forget: bool = False) -> list[float | None]:
    """Each stored run's `ended_at`, by id; with `forget`, then set NULL, as a release before
    the column leaves it when it ends a run on a migrated store."""
    read, wipe = "SELECT ended_at FROM runs ORDER BY id", "UPDATE runs SET ended_at = NULL"
    if backend == "postgres":
        ends = [row[0] for row in postgres.query(str(place), read)]
        if forget:
            postgres.query(str(place), wipe)
        return ends
    assert isinstance(place, Path)
    with contextlib.closing(sqlite3.connect(place / "runs.sqlite3", isolation_level=None)) as db:
        ends = [row[0] for row in db.execute(read)]
        if forget:
            db.execute(wipe)
    return ends


@pytest.mark.parametrize("backend", DURABLE)
async def test_a_run_an_older_release_ended_on_the_migrated_store_is_not_ended_again(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """During a deploy an older release may serve a store `migrate` brought to the schema
    with `ended_at` (SQLite 6, PostgreSQL 5; or older nodes in a rolling upgrade): its `done`s
    come without it. The next scan for runs left open and each prune record those ends,
    instead of ending such a run a second time or keeping it for ever."""
    place = place_of(backend, request, tmp_path)
    log = await open_backend(backend, place)
    ended = [RunRecord(f"{n:016x}", "asked", created_at=float(n)) for n in (1, 2)]
    for rec in ended:
        await log.create_run(rec)
        await log.append(Event.create(rec.id, 1, "done", {"status": "completed"}, t_ms=250))
    await log.close()
    assert stored_ends(backend, place, forget=True) == [1.25, 2.25]

    log = await open_backend(backend, place)
    try:
        assert await maintenance(log).interrupted_runs() == []
        assert await log.list_runs(limit=10, unfinished=True) == []
        assert [e.name for e in await log.read(ended[0].id, after=0)] == ["done"]
    finally:
        await log.close()
    assert stored_ends(backend, place, forget=True) == [1.25, 2.25]

    log = await open_backend(backend, place)
    try:
        assert await maintenance(log).prune(max_age_s=None, max_runs=1) == 1
        assert [r.id for r in await log.list_runs(limit=10)] == [ended[1].id]
    finally:
        await log.close()


async def test_prune_deletes_old_and_surplus_finished_runs_only(event_log: EventLog) -> None:
    """Every store keeps the retention limits, `--store memory` too."""
    log = event_log
    now = time.time()
    ids = [f"{n:016x}" for n in range(5)]
    for n, run_id in enumerate(ids):
        # Runs 0-1 are 40 days old, 2-4 recent; run 4 is still going (no done). Even runs
        # are alice's.
        created = now - 40 * 86400 if n < 2 else now - (5 - n)
        owner = "alice" if n % 2 == 0 else None
        await log.create_run(RunRecord(run_id, f"q{n}", created_at=created, owner=owner))
        await log.append(Event.create(run_id, 1, "phase", {"phase": "planning"}, t_ms=0))
        if n != 4:
            done = {"status": "completed", "answer": "", "timings_ms": {"total": 1}}
            await log.append(Event.create(run_id, 2, "done", done, t_ms=1))
    assert isinstance(log, Prunable)
    assert await log.prune(max_age_s=None, max_runs=None) == 0
    removed = await log.prune(max_age_s=30 * 86400, max_runs=2)
    # Too old: 0, 1. Beyond the newest two (4, 3): 2. Run 4 is kept although unfinished.
    assert removed == 3
    assert [r.id for r in await log.list_runs(limit=10)] == [ids[4], ids[3]]
    assert [r.id for r in await log.list_runs(limit=10, owner="alice")] == [ids[4]]
    assert await log.get_run(ids[0]) is None
    assert set(await log.tails(ids)) == {ids[3], ids[4]}
    with pytest.raises(KeyError):
        await log.read(ids[2], after=0)
    # Run 4 ends: nothing else is beyond the limits, and with none kept only it goes.
    await log.append(Event.create(ids[4], 2, "done", {"status": "cancelled"}, t_ms=2))
    assert await log.prune(max_age_s=30 * 86400, max_runs=2) == 0
    assert await log.prune(max_age_s=None, max_runs=0) == 2
    assert await log.list_runs(limit=10, owner="alice") == []


@pytest.mark.parametrize("limits", [(None, 150), (30 * 86400, None), (30 * 86400, 400)])
async def test_prune_goes_through_batches_past_runs_that_have_not_ended(
    event_log: EventLog, limits: tuple[float | None, int | None]
) -> None:
    """More runs past the limits than one batch, every seventh still going, some sharing a
    creation time: exactly the finished ones past the limits go, the plain rule says which."""
    log = event_log
    now = time.time()
    runs = []
    for n in range(2 * PRUNE_BATCH + 50):
        # The first 300 are 40 days old; pairs share a creation time (then ordered by id).
        created = now - 40 * 86400 + n // 2 if n < 300 else now - 1000 + n // 2
        runs.append(RunRecord(f"{n:016x}", f"q{n}", created_at=created))
        await log.create_run(runs[-1])
        if n % 7:
            done = {"status": "completed", "answer": "", "timings_ms": {"total": 1}}
            await log.append(Event.create(runs[-1].id, 1, "done", done, t_ms=1))
    max_age_s, max_runs = limits
    newest_first = sorted(runs, key=lambda r: r.sort_key, reverse=True)
    kept_by_count = newest_first if max_runs is None else newest_first[:max_runs]
    cutoff = now - max_age_s if max_age_s is not None else float("-inf")
    expected = [
        r
        for r in newest_first
        if (r in kept_by_count and r.created_at >= cutoff) or int(r.id, 16) % 7 == 0
    ]
    assert isinstance(log, Prunable)
    removed = await log.prune(max_age_s=max_age_s, max_runs=max_runs)
    assert removed == len(runs) - len(expected)
    assert [r.id for r in await log.list_runs(limit=1000)] == [r.id for r in expected]


async def test_prune_never_deletes_a_run_that_has_not_ended(open_store: OpenStore) -> None:
    log = await open_store()
    old = time.time() - 400 * 86400
    going = RunRecord("a" * 16, "going", created_at=old)
    left_open = RunRecord("b" * 16, "left open by a stopped process", created_at=old)
    await log.create_run(left_open)
    await log.close()
    log = await open_store()
    await log.create_run(going)
    await log.append(event(going.id, 1))
    assert await maintenance(log).prune(max_age_s=0, max_runs=0) == 0
    # Same age, so newest first means by id: b, a.
    assert await log.list_runs(limit=10) == [left_open, going]


async def test_the_keys_path_is_none_or_a_file_the_key_store_opens(
    open_store: OpenStore,
) -> None:
    path = maintenance(await open_store()).keys_path
    if path is not None:
        with contextlib.closing(SqliteKeys(path)) as keys:
            assert keys.listing() == []


# --- Waiters: the wait-and-wake every backend uses ------------------------------------------


async def test_a_waiter_times_out_alone() -> None:
    waiters = Waiters()
    patient = asyncio.create_task(waiters.wait("a", timeout=30))
    async with asyncio.timeout(2):
        await waiters.wait("a", timeout=0.01)
    assert not patient.done()
    assert waiters.waiting("a") == 1
    waiters.wake("a")
    async with asyncio.timeout(2):
        await patient
    assert waiters.waiting("a") == 0


async def test_cancelling_one_wait_leaves_the_others_waiting() -> None:
    waiters = Waiters()
    doomed = asyncio.create_task(waiters.wait("a", timeout=30))
    survivors = [asyncio.create_task(waiters.wait("a", timeout=30)) for _ in range(2)]
    await asyncio.sleep(0)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert waiters.waiting("a") == 2
    assert not any(task.done() for task in survivors)
    waiters.wake("a")
    async with asyncio.timeout(2):
        await asyncio.gather(*survivors)


async def test_a_wake_wakes_only_that_runs_waiters() -> None:
    waiters = Waiters()
    woken = [asyncio.create_task(waiters.wait("a", timeout=30)) for _ in range(3)]
    other = asyncio.create_task(waiters.wait("b", timeout=30))
    await asyncio.sleep(0)
    waiters.wake("a")
    async with asyncio.timeout(2):
        await asyncio.gather(*woken)
    assert not other.done()
    assert (waiters.waiting("a"), waiters.waiting("b")) == (0, 1)
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other
    assert waiters.waiting("b") == 0


async def test_wake_all_wakes_every_runs_waiters() -> None:
    waiters = Waiters()
    tasks = [asyncio.create_task(waiters.wait(run, timeout=30)) for run in "aabc"]
    await asyncio.sleep(0)
    waiters.wake_all()
    async with asyncio.timeout(2):
        await asyncio.gather(*tasks)
    assert [waiters.waiting(run) for run in "abc"] == [0, 0, 0]
