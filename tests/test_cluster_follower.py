"""An API node's followers, on a real Redis and PostgreSQL: what a followed run keeps in memory.

The node processes are left out: these tests drive `ClusterLog` and `Followers` directly, so
they can place a run's events exactly where each case needs them (the store, the live window).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from research_service.cluster.cluster_log import ClusterLog
from research_service.cluster.follower import Followers
from research_service.cluster.publisher import LivePublisher
from research_service.cluster.redis_link import Keys
from research_service.errors import StoreUnavailable
from research_service.events import Event
from research_service.runs import postgres_log
from research_service.runs.endings import end_open_runs
from research_service.runs.models import RunRecord, RunTail
from research_service.runs.run_memory import Row
from tests import postgres
from tests.cluster import own_prefix

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

RUN = "0123456789abcdef"


def row(seq: int, name: str) -> Row:
    """One event of RUN, as the store and the live window hold it."""
    event = Event.create(RUN, seq, name, {"n": seq}, t_ms=seq)
    return (event.run_id, event.seq, event.name, event.t_ms, event.wire)


async def no_tail(run_id: str) -> RunTail | None:
    """The stored tail, for tests whose store keeps no run: none."""
    return None


@pytest.fixture
async def redis() -> AsyncIterator[tuple[aioredis.Redis, Keys]]:
    async with own_prefix("follower") as pair:
        yield pair


async def test_a_run_that_ends_between_the_store_read_and_the_window_read_is_not_kept(
    redis: tuple[aioredis.Redis, Keys],
) -> None:
    """The store had the run unfinished, its window already has the done: the reader gets
    every event, and the node does not keep the ended run (nothing would ever drop it)."""
    client, keys = redis
    publisher = LivePublisher(client, keys)
    publisher.start()
    events = [row(1, "phase"), row(2, "token"), row(3, "done")]
    for event in events:
        publisher.publish(event)
    assert await publisher.flushed(5.0)
    await publisher.close()

    async def stored(run_id: str, after: int) -> list[Row]:
        return events[after:1]  # the store committed only the first when it was read

    followers = Followers(client, keys, stored, no_tail)
    follower = await followers.follow(RUN, events[:1])
    assert follower.finished
    assert [event.seq for event in follower.read(after=0, limit=None)] == [1, 2, 3]
    assert followers.get(RUN) is None
    await followers.close()


async def test_a_followed_run_s_record_is_read_from_the_database_once(
    redis: tuple[aioredis.Redis, Keys], postgres_url: str
) -> None:
    """Every listener that attaches asks for the run's record; while this node follows the
    run, only the first asks PostgreSQL (shown by taking its runs table away)."""
    client, keys = redis
    writer = await postgres_log.open(postgres_url)
    log = ClusterLog(await postgres_log.open(postgres_url, shared=True), client, keys)
    other = RunRecord("fedcba9876543210", "Not followed?", owner="bob")
    try:
        record = RunRecord(RUN, "Followed?", owner="alice")
        for each in (record, other):
            await writer.create_run(each)
            await writer.append(Event.create(each.id, 1, "phase", {"n": 1}, t_ms=0))
        await writer.flush()
        assert [event.seq for event in await log.read(RUN, after=0)] == [1]  # now followed
        assert await log.get_run(RUN) == record

        postgres.query(postgres_url, "ALTER TABLE runs RENAME TO runs_away")
        try:
            assert await log.get_run(RUN) == record
            with pytest.raises(StoreUnavailable):
                await log.get_run(other.id)
        finally:
            postgres.query(postgres_url, "ALTER TABLE runs_away RENAME TO runs")
    finally:
        await log.close()
        await writer.close()


async def test_a_followed_run_deleted_before_its_done_arrived_stops_being_followed(
    redis: tuple[aioredis.Redis, Keys], postgres_url: str
) -> None:
    """Its `done` was committed but never reached the live window (Redis lost it), and
    retention deleted the run at once: the follower stops at its next catch-up, and the node
    no longer serves the run, instead of keeping it open for as long as anyone listens."""
    client, keys = redis
    writer = await postgres_log.open(postgres_url)
    log = ClusterLog(await postgres_log.open(postgres_url, shared=True), client, keys)
    try:
        record = RunRecord(RUN, "Deleted?")
        await writer.create_run(record)
        await writer.append(Event.create(RUN, 1, "phase", {"n": 1}, t_ms=0))
        await writer.flush()
        assert [event.seq for event in await log.read(RUN, after=0)] == [1]
        assert await log.get_run(RUN) == record  # kept on the follower from now on

        await writer.append(Event.create(RUN, 2, "done", {"n": 2}, t_ms=1))  # not published
        assert await writer.prune(max_age_s=0, max_runs=None) == 1

        # Woken when the follower stops: its blocking read ends within BLOCK_MS.
        await log.wait(RUN, after=1, timeout=10)
        assert log.followers.get(RUN) is None
        assert await log.get_run(RUN) is None
        with pytest.raises(KeyError):
            await log.read(RUN, after=1)
    finally:
        await log.close()
        await writer.close()


async def test_a_follower_keeps_nothing_of_a_reply_while_its_next_read_waits(
    redis: tuple[aioredis.Redis, Keys],
) -> None:
    """A large reply from the live window (its entries' field dictionaries) is converted to
    the follower's events and freed: the follower's task, blocked in its next `XREAD` for up
    to a second, holds none of it."""
    client, keys = redis
    publisher = LivePublisher(client, keys)
    publisher.start()

    async def stored(run_id: str, after: int) -> list[Row]:
        return []

    followers = Followers(client, keys, stored, no_tail)
    try:
        follower = await followers.follow(RUN, [row(1, "phase")])
        assert follower.task is not None
        for seq in range(2, 502):
            publisher.publish(row(seq, "token"))
        assert await publisher.flushed(5.0)
        assert await followers.wait(follower, after=500, timeout=10)
        assert follower.last_seq == 501

        # Readers are woken as the follower's task goes on to its next read, so by now it
        # waits there: what its frame holds is what it keeps for that read's length.
        frame = follower.task.get_coro().cr_frame  # type: ignore[union-attr]
        held = frame.f_locals
        assert not {"rows", "reply"} & held.keys(), sorted(held)
    finally:
        await followers.close()
        await publisher.close()


@pytest.mark.parametrize("seen", [11, 12, 14])
async def test_a_follower_whose_events_were_lost_with_the_executor_stops(
    redis: tuple[aioredis.Redis, Keys], postgres_url: str, seen: int
) -> None:
    """The executor published events 11..`seen` to the live window, committed only 1..10,
    and died; Redis restarted and lost the window; the sweep ended the run after event 10
    (`error` 11, `done` 12). The follower's copy has parted from the store's: it stops, and
    the node reads the run from the store, where the crash rule applies. (A chaos campaign
    saw such a node's listeners wait for good, or get a `done` with no `error`.)"""
    client, keys = redis
    writer = await postgres_log.open(postgres_url)  # the executor
    log = ClusterLog(await postgres_log.open(postgres_url, shared=True), client, keys)
    publisher = LivePublisher(client, keys)
    publisher.start()
    try:
        record = RunRecord(RUN, "Lost with its executor?")
        await writer.create_run(record)
        phase = {"phase": "synthesizing", "status": "started", "elapsed_ms": 0}
        events = [Event.create(RUN, 1, "phase", phase, t_ms=0)] + [
            Event.create(RUN, seq, "token", {"text": f"t{seq} "}, t_ms=seq)
            for seq in range(2, seen + 1)
        ]
        for event in events[:10]:
            await writer.append(event)
        await writer.flush()
        for event in events:
            publisher.publish(tuple.__new__(tuple, event))
        assert await publisher.flushed(5.0)
        assert [event.seq for event in await log.read(RUN, after=0)] == list(range(1, seen + 1))
        follower = log.followers.get(RUN)
        assert follower is not None

        await client.delete(keys.events(RUN))  # Redis restarted: the window is gone
        await end_open_runs(writer, [record], code="worker_lost", message="lost")
        await writer.flush()

        await log.wait(RUN, after=seen, timeout=10)  # woken when the follower stops
        assert follower.parted
        assert log.followers.get(RUN) is None
        ending = await log.read(RUN, after=10)
        assert [(event.seq, event.name) for event in ending] == [(11, "error"), (12, "done")]
    finally:
        await publisher.close()
        await log.close()
        await writer.close()


async def test_a_follower_ahead_of_the_store_s_commits_goes_on(
    redis: tuple[aioredis.Redis, Keys], postgres_url: str
) -> None:
    """The usual moment: the window has events the store has not committed yet. That is no
    parting: the follower goes on, and takes the store's events as they come."""
    client, keys = redis
    writer = await postgres_log.open(postgres_url)
    log = ClusterLog(await postgres_log.open(postgres_url, shared=True), client, keys)
    try:
        await writer.create_run(RunRecord(RUN, "Ahead?"))
        await writer.append(Event.create(RUN, 1, "phase", {"n": 1}, t_ms=0))
        await writer.flush()
        await log.read(RUN, after=0)
        follower = log.followers.get(RUN)
        assert follower is not None
        follower.extend([row(2, "token"), row(3, "token")])  # from the window
        assert await log.followers._catch_up(follower)  # the store has 1 of 3: not ended
        await writer.append(Event.create(RUN, 2, "token", {"n": 2}, t_ms=2))
        await writer.append(Event.create(RUN, 3, "token", {"n": 3}, t_ms=3))
        await writer.flush()
        assert await log.followers._catch_up(follower)  # the store caught up: the same events
        assert not follower.parted
        assert log.followers.get(RUN) is follower
    finally:
        await log.close()
        await writer.close()
