"""Retention on every run store the service opens: finished runs past `--retention-days` or
beyond the newest `--retention-runs` are deleted as the service starts (then every 10 min).

`--store memory` keeps its runs in the process; without retention a long-lived one held every
run it ever ran (about 13 KB each) until it stopped.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from research_service.app import create_app
from research_service.events import Event
from research_service.runs import memory_log, sqlite_log
from research_service.runs.log import EventLog
from research_service.runs.memory_log import PRUNE_BATCH, MemoryEventLog
from research_service.runs.models import RunRecord
from research_service.settings import Settings
from tests.conftest import ServiceTestServer
from tests.fakes import ScriptedLLM, ScriptedSearch

OWNERS = (None, "alice", "bob")
DONE = {"status": "completed", "answer": "", "timings_ms": {"total": 1}}
OLD = RunRecord("a" * 16, "40 days old?", created_at=time.time() - 40 * 86400)
SURPLUS = RunRecord("b" * 16, "third newest?", created_at=time.time() - 30)
KEPT = [
    RunRecord("c" * 16, "second newest?", created_at=time.time() - 20),
    RunRecord("d" * 16, "newest?", created_at=time.time() - 10),
]


async def fill(store: EventLog) -> None:
    """Four finished runs."""
    for record in (OLD, SURPLUS, *KEPT):
        await store.create_run(record)
        started = {"phase": "planning", "status": "started", "elapsed_ms": 0}
        await store.append(Event.create(record.id, 1, "phase", started, t_ms=0))
        await store.append(Event.create(record.id, 2, "done", DONE, t_ms=1))


@pytest.fixture(params=["memory", "sqlite"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The service over a store that already holds `fill`'s runs, with --retention-runs 2."""
    store_name = str(request.param)
    settings = Settings(
        data_dir=tmp_path / "data", store=store_name, retention_days=30, retention_runs=2
    )
    event_log = None
    if store_name == "memory":
        event_log = MemoryEventLog()
        await fill(event_log)
    else:
        settings.data_dir.mkdir()
        store = await sqlite_log.open(settings.data_dir / "runs.sqlite3")
        await fill(store)
        await store.close()
    app = create_app(settings, llm=ScriptedLLM(), search=ScriptedSearch(), event_log=event_log)
    server = ServiceTestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()


async def test_finished_runs_past_the_limits_are_deleted_as_the_service_starts(
    served: str, client: httpx.AsyncClient
) -> None:
    # The first pruning runs in the background as the service starts.
    deadline = asyncio.get_running_loop().time() + 5
    while (await client.get(f"{served}v1/runs/{SURPLUS.id}")).status_code != 404:
        assert asyncio.get_running_loop().time() < deadline, "nothing was pruned within 5 s"
        await asyncio.sleep(0.02)
    listing = (await client.get(f"{served}v1/runs")).json()
    # Too old: OLD. Beyond the newest two: SURPLUS. (Runs not ended are never deleted: the
    # event-log contract tests show it for every store.)
    assert [run["id"] for run in listing["runs"]] == [KEPT[1].id, KEPT[0].id]
    for gone in (OLD, SURPLUS):
        missing = await client.get(f"{served}v1/runs/{gone.id}/events")
        assert missing.status_code == 404
        assert missing.headers["Content-Type"] == "application/problem+json"


async def test_the_memory_store_deletes_many_runs_a_batch_at_a_time() -> None:
    """Ten minutes of a busy `--store memory` can be tens of thousands of runs to delete: the
    event loop gets a turn between batches, and every other run and listing stays right."""
    store = MemoryEventLog()
    now = time.time()
    for n in range(1000):
        record = RunRecord(f"{n:016x}", f"q{n}?", created_at=now - 1000 + n, owner=f"o{n % 3}")
        await store.create_run(record)
        await store.append(Event.create(record.id, 1, "done", DONE, t_ms=1))
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counter = asyncio.create_task(count_turns())
    try:
        assert await store.prune(max_age_s=None, max_runs=10) == 990
    finally:
        counter.cancel()
    assert turns >= 990 // PRUNE_BATCH
    kept = [f"{n:016x}" for n in range(999, 989, -1)]
    assert [record.id for record in await store.list_runs(limit=100)] == kept
    for owner in ("o0", "o1", "o2"):
        mine = [record.id for record in await store.list_runs(limit=100, owner=owner)]
        assert mine == [run_id for run_id in kept if int(run_id, 16) % 3 == int(owner[1])]


@pytest.mark.parametrize("seed", range(100))
async def test_the_memory_store_deletes_exactly_what_the_rule_says(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random stores (ages, owners, runs not ended) against the rule written plainly: a run
    goes when it has ended and is older than the age limit or not among the newest
    `max_runs`. Batches of 3, so that most cases take several."""
    monkeypatch.setattr(memory_log, "PRUNE_BATCH", 3)
    rnd = random.Random(seed)
    store = MemoryEventLog()
    now = time.time()
    records, ended = [], set()
    for n in range(rnd.randint(0, 40)):
        age = rnd.choice([0, 5, 100, 40 * 86400, 50 * 86400]) + rnd.random()
        record = RunRecord(f"{n:016x}", "q?", created_at=now - age, owner=rnd.choice(OWNERS))
        await store.create_run(record)
        if rnd.random() < 0.8:
            await store.append(Event.create(record.id, 1, "done", DONE, t_ms=1))
            ended.add(record.id)
        records.append(record)
    max_runs = rnd.choice([None, 0, 1, 3, 10, 100])
    max_age_s = rnd.choice([None, 30 * 86400])

    newest_first = sorted(records, key=lambda r: r.sort_key, reverse=True)
    cutoff = float("-inf") if max_age_s is None else time.time() - max_age_s
    newest = {r.id for r in newest_first[: len(records) if max_runs is None else max_runs]}
    gone = {
        r.id for r in records if r.id in ended and (r.created_at < cutoff or r.id not in newest)
    }

    assert await store.prune(max_age_s=max_age_s, max_runs=max_runs) == len(gone)
    left = [r.id for r in newest_first if r.id not in gone]
    assert [r.id for r in await store.list_runs(limit=100)] == left
    for owner in ("alice", "bob"):  # (no owner lists every run)
        mine = [r.id for r in newest_first if r.id not in gone and r.owner == owner]
        assert [r.id for r in await store.list_runs(limit=100, owner=owner)] == mine
