"""Run creations: a run waits, for a bounded time, until the runs being created are stored."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest

from research_service import loop_turns
from research_service.defaults import START_AFTER_CREATIONS_S
from research_service.records import RunRecord
from research_service.runs.creations import Creations
from research_service.runs.models import RunOptions
from tests import postgres
from tests.conftest import MakeService
from tests.sse import listen
from tests.test_lifecycle import in_a_run, insert_waits_for
from tests.webhook_receiver import Receiver

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url


async def _stored_when(released: asyncio.Event) -> RunRecord:
    """A creation whose store answers once `released` is set."""
    await released.wait()
    return RunRecord("0123456789abcdef", "Q?", RunOptions())


#: The callers of the creations begun (the loop keeps only weak references to tasks).
_callers: set[asyncio.Task[RunRecord]] = set()


async def _begin(creations: Creations, count: int) -> list[asyncio.Event]:
    """Begin `count` creations, each held until its event is set; return once all are pending."""
    holds = [asyncio.Event() for _ in range(count)]
    for hold in holds:
        caller = asyncio.create_task(creations.finish(_stored_when(hold)))
        _callers.add(caller)
        caller.add_done_callback(_callers.discard)
    async with asyncio.timeout(5):
        while len(creations.pending) < count:  # noqa: ASYNC110 - each task starts in its turn
            await asyncio.sleep(0)
    return holds


async def test_a_run_waits_until_the_runs_being_created_are_stored() -> None:
    creations = Creations()
    holds = await _begin(creations, 3)
    waiting = asyncio.create_task(creations.settled(timeout=30))
    for hold in holds[:2]:
        hold.set()
    done, _ = await asyncio.wait([waiting], timeout=0.05)
    assert not done, "the run started while a run was still being created"
    holds[2].set()
    await asyncio.wait_for(waiting, timeout=5)
    assert not creations.pending


async def test_a_run_waits_no_longer_than_its_timeout() -> None:
    creations = Creations()
    holds = await _begin(creations, 2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.wait_for(creations.settled(timeout=0.05), timeout=5)
    assert loop.time() - began >= 0.05
    assert len(creations.pending) == 2  # they go on; the run did not wait for them
    for hold in holds:
        hold.set()


async def test_a_run_starts_at_once_when_no_run_is_being_created() -> None:
    creations = Creations()
    waiting = asyncio.create_task(creations.settled(timeout=30))
    await asyncio.sleep(0)  # its first step
    assert waiting.done()


async def test_every_waiting_run_goes_once_the_creations_end_and_the_next_ones_hold_again() -> None:
    creations = Creations()
    holds = await _begin(creations, 5)
    waiting = [asyncio.create_task(creations.settled(timeout=30)) for _ in range(10)]
    for hold in holds:
        hold.set()
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
    holds = await _begin(creations, 1)
    later = asyncio.create_task(creations.settled(timeout=30))
    done, _ = await asyncio.wait([later], timeout=0.05)
    assert not done
    holds[0].set()
    await asyncio.wait_for(later, timeout=5)


class RunStarts:
    """Stands in for the loop's turn gate (loop_turns.SHARED): lets every caller through at once,
    noting when each run's task first reached it."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}

    def pass_now(self) -> bool:
        return not in_a_run()

    async def turn(self) -> None:
        task = asyncio.current_task()
        if task is not None and in_a_run():
            self.first.setdefault(task.get_name().removeprefix("run-"), time.monotonic())


async def test_a_service_starts_a_run_once_the_run_created_beside_it_is_stored(
    make_service: MakeService,
    postgres_url: str,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PostgreSQL stores each creation on a connection of its own: one whose webhook cannot be
    stored yet (its table locked by another connection) is still being created while a run
    without a webhook is stored and started. That run's pipeline waits for it, up to the bound,
    and no longer; it takes its turn to start only then (the creations' end wakes every run
    that waited, and they go on a few per loop turn)."""
    starts = RunStarts()
    monkeypatch.setattr(loop_turns, "SHARED", starts)
    service = await make_service(
        store="postgres", database_url=postgres_url, fetch_allow="127.0.0.1"
    )
    holder = await asyncpg.connect(postgres_url)
    try:
        async with Receiver() as receiver:
            locked = holder.transaction()
            await locked.start()
            await holder.execute("LOCK TABLE webhook_deliveries IN SHARE MODE")
            body = {"question": "Held?", "options": {"webhook": {"url": receiver.url()}}}
            held = asyncio.create_task(client.post(service.url("/v1/runs"), json=body))
            await insert_waits_for(holder, "webhook_deliveries")
            sent = time.monotonic()
            created = await client.post(service.url("/v1/runs"), json={"question": "Beside?"})
            assert created.status_code == 201, created.text
            url = service.url(created.json()["events_url"])
            first = await listen(client, url, stop=lambda event: event.event == "phase")
            # From the POST's sending: the run's wait begins as it is answered, a moment before
            # the client has the answer (counted from then, it read 148 ms once in CI).
            waited = time.monotonic() - sent
            assert first.names == ["phase"]
            assert waited >= START_AFTER_CREATIONS_S, f"the run began after {waited:.3f} s"
            turn_after = starts.first[created.json()["id"]] - sent
            assert turn_after >= START_AFTER_CREATIONS_S, f"its turn came after {turn_after:.3f} s"
            assert not held.done(), "the run beside it was stored meanwhile"
            await locked.rollback()
            assert (await held).status_code == 201
            await service.wait_done(created.json()["id"])
    finally:
        await holder.close()
