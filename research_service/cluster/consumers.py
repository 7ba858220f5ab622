"""The run queue's consumers: an executor that has left is removed from the group.

Each executor process reads the queue under its own node id, so the consumer group gains a
consumer for every worker started, and Redis keeps them all until told otherwise (`XINFO
CONSUMERS` grew by one per restart or deploy). A consumer is removed once its node's heartbeat
is gone, it has read nothing for a lease, and no entry is pending for it: the entries a dead
executor had read are claimed by the live executors' sweeps first (`XAUTOCLAIM`), and removing
a consumer with entries pending would leave them unclaimable.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from research_service.cluster.redis_link import GROUP, Keys

log = logging.getLogger(__name__)


async def forget_departed(
    redis: aioredis.Redis, keys: Keys, *, me: str, lease_s: float
) -> list[str]:
    """Remove the queue's consumers whose executors have gone; the names removed.

    Asked by the sweep (cluster/sweeper.py) only once Redis has been up for a lease: before
    that, a live node's heartbeat may be missing.
    """
    try:
        consumers: list[dict[str, Any]] = await redis.xinfo_consumers(keys.queue, GROUP)
    except ResponseError:  # no queue or group yet, or Redis restarted without them
        return []
    removed = []
    for consumer in consumers:
        name = consumer["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        if name == me or consumer["pending"] or consumer["idle"] < lease_s * 1000:
            continue
        if await redis.exists(keys.node(name)):
            continue  # alive, only waiting for room for another run
        await redis.xgroup_delconsumer(keys.queue, GROUP, name)
        removed.append(name)
    if removed:
        log.info("run queue: removed the consumers of %d departed executors", len(removed))
    return removed
