"""The webhook outbox's contract, written once and run against every run store's outbox.

What a look at the outbox (`due`) hands out: pending deliveries that are due, not held, and
whose run has ended, with the keys taking turns. The memory outbox answers it from indexes;
100 random histories check it against the rule written plainly.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from research_service.events import Event
from research_service.runs.log import EventLog, Prunable
from research_service.runs.memory_log import MemoryEventLog
from research_service.runs.models import RunRecord
from research_service.webhooks.memory_outbox import MemoryOutbox
from research_service.webhooks.outbox import Delivery, Outbox, in_turns, new_delivery_id
from research_service.webhooks.postgres_outbox import PostgresOutbox
from research_service.webhooks.service import outbox_for
from research_service.webhooks.signing import SERVER_SCOPE, key_scope
from tests import postgres
from tests.test_event_log_contract import BACKENDS, open_backend, place_of

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

DONE = {"status": "completed", "answer": "", "timings_ms": {"total": 1}}
NOW = time.time()


@dataclass
class Stores:
    runs: EventLog
    outbox: Outbox


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    name = str(request.param)
    runs = await open_backend(name, place_of(name, request, tmp_path))
    outbox, _ = await outbox_for(runs)
    yield Stores(runs, outbox)
    close = getattr(outbox, "close", None)
    if close is not None:
        await close()
    await runs.close()


async def new_run(stores: Stores, n: int, *, created_at: float = NOW) -> str:
    run_id = f"{n:016x}"
    await stores.runs.create_run(RunRecord(run_id, f"question {n}?", created_at=created_at))
    started = {"phase": "planning", "status": "started", "elapsed_ms": 0}
    await stores.runs.append(Event.create(run_id, 1, "phase", started, t_ms=0))
    return run_id


async def end(stores: Stores, run_id: str) -> None:
    await stores.runs.append(Event.create(run_id, 2, "done", DONE, t_ms=1))


def owed(run_id: str, scope: str = SERVER_SCOPE, *, made: float = NOW) -> Delivery:
    return Delivery(new_delivery_id(), run_id, "http://hooks.test/", scope, "http://s", made)


async def test_a_delivery_is_due_once_its_run_has_ended(stores: Stores) -> None:
    run_id = await new_run(stores, 1)
    delivery = owed(run_id)
    await stores.outbox.add([delivery])
    assert await stores.outbox.pending()
    assert await stores.outbox.due(now=NOW) == []
    await end(stores, run_id)
    assert await stores.outbox.due(now=NOW) == [delivery]
    assert await stores.outbox.of_run(run_id) == [delivery]


async def test_a_claim_holds_it_from_every_look_until_it_runs_out(stores: Stores) -> None:
    run_id = await new_run(stores, 1)
    delivery = owed(run_id)
    await stores.outbox.add([delivery])
    await end(stores, run_id)
    assert await stores.outbox.claim(delivery.id, now=NOW, until=NOW + 60)
    assert not await stores.outbox.claim(delivery.id, now=NOW + 1, until=NOW + 61)
    assert await stores.outbox.due(now=NOW + 59) == []
    assert await stores.outbox.due(now=NOW + 60) == [delivery]
    await stores.outbox.release()
    # A sole process drops the holds a stopped one left; PostgreSQL's are other nodes' too.
    released = [] if isinstance(stores.outbox, PostgresOutbox) else [delivery]
    assert await stores.outbox.due(now=NOW) == released


async def test_a_failed_attempt_waits_for_its_next_one_and_an_ended_one_is_kept(
    stores: Stores,
) -> None:
    run_id = await new_run(stores, 1)
    delivery = owed(run_id)
    await stores.outbox.add([delivery])
    await end(stores, run_id)
    assert await stores.outbox.claim(delivery.id, now=NOW, until=NOW + 60)
    failed = replace(delivery, attempts=1, next_at=NOW + 5, last_error="HTTP 500")
    await stores.outbox.save(failed, hold_until=failed.next_at)
    assert await stores.outbox.due(now=NOW + 4.9) == []
    assert await stores.outbox.due(now=NOW + 5) == [failed]
    assert await stores.outbox.pending()
    delivered = replace(failed, attempts=2, state="delivered", last_error=None)
    await stores.outbox.save(delivered)
    assert await stores.outbox.due(now=NOW + 10) == []
    assert not await stores.outbox.pending()
    assert await stores.outbox.of_run(run_id) == [delivered]


async def test_the_keys_take_turns_so_none_crowds_out_the_others(stores: Stores) -> None:
    """Key `a` has five due, `b` two, the server one: every scope's oldest, then every
    scope's second, and so on (soonest due, then oldest, first within a turn)."""
    made: dict[str, list[Delivery]] = {"a": [], "b": [], "server": []}
    plan = [("a", 5), ("b", 2), ("server", 1)]
    n = 0
    for name, count in plan:
        for _ in range(count):
            n += 1
            run_id = await new_run(stores, n)
            scope = SERVER_SCOPE if name == "server" else key_scope(name)
            # Made oldest first for `a`: without turns, `a`'s five would come first.
            delivery = owed(run_id, scope, made=NOW - 100 + n)
            made[name].append(delivery)
            await stores.outbox.add([delivery])
            await end(stores, run_id)
    a, b, server = made["a"], made["b"], made["server"]
    expected = [a[0], b[0], server[0], a[1], b[1], a[2], a[3], a[4]]
    assert await stores.outbox.due(now=NOW) == expected
    assert await stores.outbox.due(now=NOW, limit=4) == expected[:4]


async def test_a_run_deleted_by_retention_takes_its_deliveries_with_it(stores: Stores) -> None:
    run_id = await new_run(stores, 1, created_at=NOW - 90 * 86400)
    await stores.outbox.add([owed(run_id), owed(run_id, key_scope("a"))])
    await end(stores, run_id)
    assert isinstance(stores.runs, Prunable)
    assert await stores.runs.prune(max_age_s=30 * 86400, max_runs=None) == 1
    assert not await stores.outbox.pending()
    assert await stores.outbox.due(now=NOW) == []
    assert await stores.outbox.of_run(run_id) == []


class PlainOutbox:
    """The rule, written plainly: every look looks at every delivery."""

    def __init__(self, runs: MemoryEventLog) -> None:
        self.runs = runs
        self.deliveries: dict[str, Delivery] = {}
        self.held: dict[str, float] = {}

    def due(self, now: float, limit: int) -> list[Delivery]:
        found: dict[str, list[Delivery]] = {}
        for d in self.deliveries.values():
            if (
                d.state == "pending"
                and d.next_at <= now
                and self.held.get(d.id, 0.0) <= now
                and self.runs.run_ended(d.run_id)
            ):
                found.setdefault(d.scope, []).append(d)
        mine = [sorted(ds, key=lambda d: (d.next_at, d.created_at, d.id)) for ds in found.values()]
        return in_turns(mine, limit)

    def of_run(self, run_id: str) -> list[Delivery]:
        if self.runs.run_ended(run_id) is None:
            return []
        return sorted(
            (d for d in self.deliveries.values() if d.run_id == run_id), key=lambda d: d.created_at
        )

    def pending(self) -> bool:
        return any(
            d.state == "pending" and self.runs.run_ended(d.run_id) is not None
            for d in self.deliveries.values()
        )


async def attempt(
    outbox: MemoryOutbox, plain: PlainOutbox, delivery: Delivery, outcome: float, now: float
) -> None:
    """Claim `delivery`; then still sending, failed (retry in 5 s), delivered or given up."""
    until = now + 60
    assert await outbox.claim(delivery.id, now=now, until=until)
    plain.held[delivery.id] = until
    if outcome < 0.3:
        return
    saved = replace(delivery, attempts=delivery.attempts + 1)
    hold: float | None = None
    if outcome < 0.7:
        saved = replace(saved, next_at=now + 5)
        hold = saved.next_at
    else:
        saved = replace(saved, state="delivered" if outcome < 0.85 else "failed")
    await outbox.save(saved, hold_until=hold)
    plain.deliveries[saved.id] = saved
    if hold is None:
        del plain.held[saved.id]
    else:
        plain.held[saved.id] = hold


@pytest.mark.parametrize("seed", range(100))
async def test_the_memory_outbox_answers_as_the_plain_rule(seed: int) -> None:
    """Random histories: runs made, ended and deleted; deliveries claimed, failed, retried,
    delivered and given up; time going on. After every step both answer alike."""
    rnd = random.Random(seed)
    runs = MemoryEventLog()
    outbox = MemoryOutbox(runs)
    plain = PlainOutbox(runs)
    now = 1_000.0
    made: list[str] = []
    for step in range(120):
        roll = rnd.random()
        if roll < 0.2 or not made:
            run_id = f"{step:016x}"
            await runs.create_run(RunRecord(run_id, "q?", created_at=now - rnd.randrange(3)))
            made.append(run_id)
            scope = rnd.choice([SERVER_SCOPE, key_scope("a"), key_scope("b")])
            new = [owed(run_id, scope, made=now) for _ in range(rnd.choice([1, 1, 2]))]
            await outbox.add(new)
            plain.deliveries.update((d.id, d) for d in new)
        elif roll < 0.35:
            run_id = rnd.choice(made)
            if runs.run_ended(run_id) is False:
                await runs.append(Event.create(run_id, 1, "done", DONE, t_ms=1))
        elif roll < 0.42:
            await runs.prune(max_age_s=None, max_runs=rnd.randrange(len(made) + 1))
        elif roll < 0.55:
            now += rnd.choice([0.5, 1.0, 5.0, 30.0])
        else:
            due = await outbox.due(now=now, limit=rnd.choice([2, 5, 200]))
            if due:
                await attempt(outbox, plain, rnd.choice(due), rnd.random(), now)
        limit = rnd.choice([1, 3, 200])
        assert await outbox.due(now=now, limit=limit) == plain.due(now, limit), step
        assert await outbox.pending() == plain.pending(), step
        for run_id in rnd.sample(made, min(3, len(made))):
            assert await outbox.of_run(run_id) == plain.of_run(run_id), step
