"""The run queue's consumer group forgets the executors that have gone, on a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from research_service.cluster.consumers import forget_departed
from research_service.cluster.redis_link import GROUP, Keys
from tests.cluster import own_prefix


@pytest.fixture
async def redis() -> AsyncIterator[tuple[aioredis.Redis, Keys]]:
    async with own_prefix("consumers") as pair:
        yield pair


async def consumers(client: aioredis.Redis, keys: Keys) -> dict[str, int]:
    """Each consumer of the queue's group, with the entries pending for it."""
    found = await client.xinfo_consumers(keys.queue, GROUP)
    return {c["name"].decode(): c["pending"] for c in found}


async def test_a_departed_executor_with_nothing_pending_is_removed_from_the_group(
    redis: tuple[aioredis.Redis, Keys],
) -> None:
    """Every worker process joins under its own name: without this the group kept one
    consumer per process ever started."""
    client, keys = redis
    await client.xgroup_create(keys.queue, GROUP, id="0", mkstream=True)
    await client.xadd(keys.queue, {"run": "0123456789abcdef"})
    # Read but never claimed: its executor died holding it (a sweep claims it after a lease).
    await client.xreadgroup(GROUP, "died-holding-a-run", {keys.queue: ">"}, count=1)
    for n, name in enumerate(("me", "restarted-before", "alive-and-busy")):
        # Each took a run and acknowledged its entry, as an executor does once it claims it.
        await client.xadd(keys.queue, {"run": f"{n:016x}"})
        reply: Any = await client.xreadgroup(GROUP, name, {keys.queue: ">"}, count=1)
        ((_, ((entry, _),)),) = reply
        await client.xack(keys.queue, GROUP, entry)
    await client.set(keys.node("alive-and-busy"), "alive", ex=60)  # its heartbeat
    await client.set(keys.node("me"), "alive", ex=60)
    everyone = {"died-holding-a-run": 1, "me": 0, "restarted-before": 0, "alive-and-busy": 0}
    assert await consumers(client, keys) == everyone

    # Idle for less than a lease: it may be alive and between two reads.
    assert await forget_departed(client, keys, me="me", lease_s=60) == []
    assert await consumers(client, keys) == everyone

    assert await forget_departed(client, keys, me="me", lease_s=0) == ["restarted-before"]
    assert await consumers(client, keys) == {
        "died-holding-a-run": 1,
        "me": 0,
        "alive-and-busy": 0,
    }

    # Once a live executor has claimed the dead one's entry, the dead one goes too.
    claimed = await client.xautoclaim(keys.queue, GROUP, "me", 0, count=10)
    assert [fields for _, fields in claimed[1]] == [{b"run": b"0123456789abcdef"}]
    assert await forget_departed(client, keys, me="me", lease_s=0) == ["died-holding-a-run"]
    assert await consumers(client, keys) == {"me": 1, "alive-and-busy": 0}


async def test_no_queue_yet_is_nothing_to_forget(redis: tuple[aioredis.Redis, Keys]) -> None:
    client, keys = redis
    assert await forget_departed(client, keys, me="me", lease_s=0) == []
    await client.xgroup_create(keys.queue, GROUP, id="0", mkstream=True)
    assert await forget_departed(client, keys, me="me", lease_s=0) == []
