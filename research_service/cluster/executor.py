"""Takes runs from the cluster's queue and executes them, and stops them when asked to.

Hand-off is at least once (a Redis Stream with a consumer group: an entry read by a process
that died is claimed again after a lease); execution is exactly once, because a run is only
started by whoever claims it in PostgreSQL, where exactly one claim can succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from redis.exceptions import ResponseError

from research_service.cluster.coordinator import ClusterCoordinator
from research_service.cluster.redis_link import ERRORS, GROUP
from research_service.cluster.tasks import every, stop
from research_service.errors import StoreUnavailable
from research_service.outage import Outage
from research_service.pipeline.review import ReviewRefused
from research_service.runs.manager import RunManager

log = logging.getLogger(__name__)

#: How long one blocking read of the queue waits (a draining executor stops within it).
BLOCK_MS: Final = 1000
RETRY_S: Final = 0.5


class Executor:
    """Executes queued runs in this process, up to `capacity` at once."""

    def __init__(self, manager: RunManager, coordinator: ClusterCoordinator, capacity: int):
        self.manager = manager
        self.cluster = coordinator
        self.capacity = capacity
        self.draining = False
        self._room = asyncio.Event()
        self._room.set()
        coordinator.on_run_ended = self._room.set
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def node_id(self) -> str:
        """The name of this executor in the cluster."""
        return self.cluster.node_id

    async def start(self) -> None:
        """Join the executors' group and start taking runs (and sweeping for lost ones)."""
        await self._join_group()
        self._tasks = [
            asyncio.create_task(self._take_forever(), name="executor"),
            asyncio.create_task(self._sweep_forever(), name="executor-sweep"),
        ]

    async def drain(self, timeout: float) -> None:
        """Take no more runs; let those running finish for `timeout` s, cancel the rest."""
        self.stop_taking()
        taking = self._tasks[:1]
        if taking:
            # The read in progress ends within BLOCK_MS; an entry it took is claimed by it,
            # or left pending for another executor to claim after a lease.
            await asyncio.wait(taking, timeout=BLOCK_MS / 1000 + 1)
        log.info("draining: %d runs may finish within %g s", self.manager.active_runs, timeout)
        await self.manager.drain(timeout)

    async def close(self) -> None:
        """Stop every task of the executor."""
        self.draining = True
        await stop(*self._tasks)

    # --- taking runs --------------------------------------------------------------------

    async def _join_group(self) -> None:
        try:
            await self.cluster.redis.xgroup_create(
                self.cluster.keys.queue, GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _take_forever(self) -> None:
        redis, queue = self.cluster.redis, self.cluster.keys.queue
        outage = Outage("cannot read the run queue")
        while not self.draining:
            if self.manager.active_runs >= self.capacity:
                self._room.clear()
                await self._room.wait()
                continue
            room = self.capacity - self.manager.active_runs
            try:
                reply: Any = await redis.xreadgroup(
                    GROUP, self.node_id, {queue: ">"}, count=room, block=BLOCK_MS
                )
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis restarted without the queue
                    with contextlib.suppress(*ERRORS):
                        await self._join_group()
                    continue
                outage.failed(exc)
                await asyncio.sleep(RETRY_S)
                continue
            except ERRORS as exc:
                outage.failed(exc)
                await asyncio.sleep(RETRY_S)
                continue
            outage.ok()
            # Claimed side by side: a burst of runs starts in one round trip, not one each.
            entries = [entry for _, batch in reply or () for entry in batch]
            results = await asyncio.gather(
                *(self._take(key, fields) for key, fields in entries), return_exceptions=True
            )
            for result in results:
                if isinstance(result, Exception):
                    # Its entry stays pending: another executor claims it after a lease.
                    log.error("taking a run failed unexpectedly", exc_info=result)

    def stop_taking(self) -> None:
        """Take no more runs from now on (the read in progress hands back what it gets)."""
        self.draining = True
        self._room.set()

    async def _take(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        run_id = fields.get(b"run", b"").decode()
        redis, queue = self.cluster.redis, self.cluster.keys.queue
        if self.draining:
            # Read just as draining began: back in the queue for another executor, now.
            with contextlib.suppress(*ERRORS):
                await self.cluster.queue(run_id, None)  # its owner's slot lapses as it was
                await redis.xack(queue, GROUP, entry_id)
                await redis.xdel(queue, entry_id)
            return
        self.cluster.claiming.add(run_id)
        try:
            record = await self.cluster.executions.claim(run_id, self.node_id)
        except StoreUnavailable as exc:
            # Left pending: claimed again after a lease. If the claim was made and only its
            # answer lost, the run is recorded as this node's and runs nowhere: the sweep
            # ends it (Sweeper, "left without an executor").
            log.warning("cannot claim run %s (%s); another executor will", run_id, exc)
            return
        finally:
            self.cluster.claiming.discard(run_id)  # and into `local` below, in the same step
        if record is not None:
            self.cluster.log.store.adopt(record)  # its log is empty: nothing to read back
            self.manager.start(record)
            log.info("run %s: executing here (%s)", run_id, self.node_id)
        with contextlib.suppress(*ERRORS):
            pipe = redis.pipeline(transaction=False)
            pipe.xack(queue, GROUP, entry_id)
            # Acknowledged, the entry is read by nobody again (the sweep claims only pending
            # ones): deleted, or the queue would grow by one entry per run for good.
            pipe.xdel(queue, entry_id)
            pipe.get(self.cluster.keys.cancel(run_id))
            _, _, cancel = await pipe.execute()
            if record is not None and cancel is not None:
                # Cancelled while it waited in the queue.
                code, _, message = cancel.decode().partition("\0")
                await self.manager.cancel(run_id, code=code, message=message)

    # --- cancel requests, lost entries and lost runs ------------------------------------

    async def listen_for_cancels(self) -> None:
        """Cancel, or hand plan decisions to, the runs executing here (pub/sub, any node)."""
        keys = self.cluster.keys
        outage = Outage("cancel and review requests: lost Redis")
        while True:
            try:
                async with self.cluster.redis.pubsub() as pubsub:
                    await pubsub.subscribe(keys.cancels, keys.reviews)
                    outage.ok()
                    # A request made while we were not subscribed is still in its key.
                    for run_id in list(self.cluster.local):
                        await self._cancel_if_asked(run_id)
                        await self._decide_if_asked(run_id)
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        run_id = message["data"].decode()
                        if message["channel"].decode() == keys.reviews:
                            await self._decide_if_asked(run_id)
                        else:
                            await self._cancel_if_asked(run_id)
            except ERRORS as exc:
                outage.failed(exc)
                await asyncio.sleep(RETRY_S)

    async def _decide_if_asked(self, run_id: str) -> None:
        gate = self.manager.review_gate(run_id)
        if gate is None or not gate.waiting:
            return
        decision = await self.cluster.review_decision(run_id, gate.round)
        if decision is not None:
            with contextlib.suppress(ReviewRefused):
                gate.decide(decision)

    async def _cancel_if_asked(self, run_id: str) -> None:
        if run_id not in self.cluster.local:
            return
        cancel = await self.cluster.cancel_request(run_id)
        if cancel is not None:
            await self.manager.cancel(run_id, code=cancel[0], message=cancel[1])

    async def _sweep_forever(self) -> None:
        listener = asyncio.create_task(self.listen_for_cancels(), name="cancel-requests")
        try:
            await every(self.cluster.beat_s, self.sweep, what="the sweep of the run queue")
        finally:
            await stop(listener)

    async def sweep(self) -> None:
        """Claim the queue entries a dead executor had read but not claimed."""
        cluster = self.cluster
        lease_ms = int(cluster.lease_s * 1000)
        if not self.draining and self.manager.active_runs < self.capacity:
            reply: Any = await cluster.redis.xautoclaim(
                cluster.keys.queue, GROUP, self.node_id, lease_ms, count=10
            )
            for key, fields in reply[1]:
                if fields:
                    await self._take(key, fields)
