"""Listener counts across the cluster: each node says how many listeners it has per run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

import redis.asyncio as aioredis

from research_service.cluster.redis_link import ERRORS, Keys
from research_service.cluster.tasks import stop
from research_service.outage import Outage
from research_service.runs.coordinator import Followers

log = logging.getLogger(__name__)

#: How long a node's counts stay in Redis without being written again.
COUNTS_TTL_MS: Final = 3_600_000
#: The field of a run's counts that holds when a node's last listener of it left (Unix ms):
#: no node id starts with "_".
LEFT_FIELD: Final = "_left"


class Presence:
    """The listeners here of runs executing elsewhere, written to Redis as they change.

    Counts go out in the background (a join or leave never waits on Redis); the executor
    of a run reads them only when its own last listener left, before it abandons the run.
    When a node's last listener of a run leaves, the time is written too: the run is then
    abandoned only `--abandon-after-s` after that, as after a listener leaving its executor.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, node_id: str) -> None:
        self._redis = redis
        self._keys = keys
        self._node = node_id
        self._counts: dict[str, int] = {}
        #: When the last listener here of each run left (Unix ms), until it is written.
        self._left_ms: dict[str, int] = {}
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
            self._left_ms[run_id] = int(time.time() * 1000)
        self._changed(run_id)

    def rewrite_all(self) -> None:
        """Write every count again (Redis may have restarted and lost them)."""
        self._dirty.update(self._counts)
        self._wake.set()

    async def elsewhere(self, run_id: str) -> Followers:
        """Listeners of the run on other live nodes, and how long ago the last of them left.

        A count of 1 when Redis cannot tell: a run is never abandoned only because the
        cluster's Redis is down.
        """
        try:
            fields = {
                _text(name): _text(value)
                for name, value in (await self._redis.hgetall(self._keys.listeners(run_id))).items()
            }
            left = fields.pop(LEFT_FIELD, None)
            quiet_s = None if left is None else max(0.0, time.time() - int(left) / 1000)
            nodes = [node for node, count in fields.items() if int(count) > 0]
            nodes = [node for node in nodes if node != self._node]
            if not nodes:
                return Followers(0, quiet_s)
            alive = await self._redis.exists(*(self._keys.node(node) for node in nodes))
        except (*ERRORS, ValueError) as exc:
            log.warning("cannot count the listeners of run %s (%s); keeping it", run_id, exc)
            return Followers(1)
        return Followers(int(alive), quiet_s)

    async def close(self) -> None:
        """Stop writing; this node's counts go (its listeners are gone, to resume elsewhere)."""
        await stop(self._task)
        if self._counts:
            now_ms = int(time.time() * 1000)
            with contextlib.suppress(*ERRORS):
                pipe = self._redis.pipeline(transaction=False)
                for run_id in self._counts:
                    pipe.hdel(self._keys.listeners(run_id), self._node)
                    pipe.hset(self._keys.listeners(run_id), LEFT_FIELD, now_ms)
                await pipe.execute()

    def _changed(self, run_id: str) -> None:
        self._dirty.add(run_id)
        self._wake.set()

    async def _write_forever(self) -> None:
        outage = Outage("cannot write listener counts to Redis")
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            lefts = {
                run_id: self._left_ms.pop(run_id) for run_id in dirty if run_id in self._left_ms
            }
            pipe = self._redis.pipeline(transaction=False)
            for run_id in dirty:
                key = self._keys.listeners(run_id)
                count = self._counts.get(run_id, 0)
                left_ms = lefts.get(run_id)
                if count:
                    pipe.hset(key, self._node, count)
                else:
                    pipe.hdel(key, self._node)
                    if left_ms is not None:
                        pipe.hset(key, LEFT_FIELD, left_ms)
                pipe.pexpire(key, COUNTS_TTL_MS)
            try:
                await pipe.execute()
                outage.ok()
            except ERRORS as exc:
                outage.failed(exc)
                self._dirty |= dirty
                self._left_ms = lefts | self._left_ms  # a later leave wins
                await asyncio.sleep(0.5)
                self._wake.set()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
