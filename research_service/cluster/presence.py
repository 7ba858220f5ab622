"""Listener counts across the cluster: each node says how many listeners it has per run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import redis.asyncio as aioredis

from research_service.cluster.redis_link import ERRORS, Keys
from research_service.cluster.tasks import stop

log = logging.getLogger(__name__)

#: How long a node's counts stay in Redis without being written again.
COUNTS_TTL_MS: Final = 3_600_000


class Presence:
    """The listeners here of runs executing elsewhere, written to Redis as they change.

    Counts go out in the background (a join or leave never waits on Redis); the executor
    of a run reads them only when its own last listener left, before it abandons the run.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, node_id: str) -> None:
        self._redis = redis
        self._keys = keys
        self._node = node_id
        self._counts: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start writing counts."""
        self._task = asyncio.create_task(self._write_forever(), name="presence")

    def joined(self, run_id: str) -> None:
        """A listener of the run joined on this node."""
        self._counts[run_id] = self._counts.get(run_id, 0) + 1
        self._changed(run_id)

    def left(self, run_id: str) -> None:
        """A listener of the run left this node."""
        count = self._counts.get(run_id, 0) - 1
        if count > 0:
            self._counts[run_id] = count
        else:
            self._counts.pop(run_id, None)
        self._changed(run_id)

    def rewrite_all(self) -> None:
        """Write every count again (Redis may have restarted and lost them)."""
        self._dirty.update(self._counts)
        self._wake.set()

    async def elsewhere(self, run_id: str) -> int:
        """Listeners of the run on other live nodes; 1 when Redis cannot tell.

        (A run is never abandoned only because the cluster's Redis is down.)
        """
        try:
            counts = await self._redis.hgetall(self._keys.listeners(run_id))
            nodes = [_text(node) for node, count in counts.items() if int(count) > 0]
            nodes = [node for node in nodes if node != self._node]
            if not nodes:
                return 0
            alive = await self._redis.exists(*(self._keys.node(node) for node in nodes))
        except ERRORS as exc:
            log.warning("cannot count the listeners of run %s (%s); keeping it", run_id, exc)
            return 1
        return int(alive)

    async def close(self) -> None:
        """Stop writing; this node's counts go (its listeners are gone)."""
        await stop(self._task)
        if self._counts:
            with contextlib.suppress(*ERRORS):
                pipe = self._redis.pipeline(transaction=False)
                for run_id in self._counts:
                    pipe.hdel(self._keys.listeners(run_id), self._node)
                await pipe.execute()

    def _changed(self, run_id: str) -> None:
        self._dirty.add(run_id)
        self._wake.set()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            pipe = self._redis.pipeline(transaction=False)
            for run_id in dirty:
                key = self._keys.listeners(run_id)
                count = self._counts.get(run_id, 0)
                if count:
                    pipe.hset(key, self._node, count)
                    pipe.pexpire(key, COUNTS_TTL_MS)
                else:
                    pipe.hdel(key, self._node)
            try:
                await pipe.execute()
            except ERRORS as exc:
                log.warning("cannot write listener counts to Redis (%s); retrying", exc)
                self._dirty |= dirty
                await asyncio.sleep(0.5)
                self._wake.set()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
