"""How many runs wait in the cluster's queue, read from Redis when `GET /metrics` is scraped.

The queue is a Stream read by the consumer group `executors`. A run waits while no executor
has read its entry (the group's lag), and again while an executor has read but not yet
acknowledged it (the group's pending entries: claimed in a moment, or by the sweep after a
lease when that executor died). The figures are the whole cluster's, the same on every node.
"""

from __future__ import annotations

from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from research_service.cluster.redis_link import GROUP, Keys

#: Entries counted one by one when Redis does not report the group's lag (it has lost track
#: after entries were deleted): the count stops here.
MAX_COUNTED: Final = 10_000


async def queue_depth(redis: aioredis.Redis, keys: Keys) -> dict[str, int]:
    """The queued runs by state: `unread` (no executor read them yet) and `unacknowledged`."""
    try:
        groups: Any = await redis.xinfo_groups(keys.queue)
    except ResponseError as exc:
        if "no such key" in str(exc):  # nothing was ever queued
            return {"unread": 0, "unacknowledged": 0}
        raise
    group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
    if group is None:  # no executor has joined yet: every entry waits
        return {"unread": int(await redis.xlen(keys.queue)), "unacknowledged": 0}
    lag = group.get("lag")
    if lag is None:
        last = group["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else str(last)
        entries: Any = await redis.xrange(keys.queue, min=f"({last}", count=MAX_COUNTED)
        lag = len(entries)
    return {"unread": int(lag), "unacknowledged": int(group["pending"])}
