"""Every node watches for runs nobody executes any more, and ends or re-queues them.

A run whose executor's heartbeat is gone is ended `worker_lost`, after the events that
executor published but had not yet committed; a queued run whose queue entry Redis may have
forgotten (or its API node never added) is queued again, with its slot. Ending is claimed in
PostgreSQL, so exactly one node does it.
A run recorded as this node's that it does not execute (a claim or take-over whose answer
was lost) is ended `worker_lost` too, once two sweeps in a row find it so. The executors that
have gone leave the run queue's consumer group (cluster/consumers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from research_service.cluster.consumers import forget_departed
from research_service.cluster.coordinator import ClusterCoordinator
from research_service.cluster.publisher import entry_id, row_of
from research_service.cluster.redis_link import ERRORS, server_life
from research_service.cluster.tasks import every, stop
from research_service.events import Event
from research_service.runs.endings import end_open_runs

log = logging.getLogger(__name__)


class Sweeper:
    """Finds lost runs every third of a lease."""

    def __init__(self, coordinator: ClusterCoordinator) -> None:
        self.cluster = coordinator
        #: Runs queued again, by the Redis life (server run id) that may have forgotten them.
        self._requeued: dict[str, str] = {}
        #: Lost runs this node took over whose ending has not yet all been done (a failure
        #: part-way, the database or Redis gone a moment), by their lost executor. Taken over,
        #: a run's executor is this live node: nothing else would ever end it.
        self._ending: dict[str, str] = {}
        #: Runs recorded as this node's that it does not execute, at the last sweep.
        self._unexecuted: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sweep every third of a lease."""
        self._task = asyncio.create_task(
            every(self.cluster.beat_s, self.sweep, what="the sweep for lost runs"), name="sweeper"
        )

    async def close(self) -> None:
        """Stop sweeping."""
        await stop(self._task)

    async def sweep(self) -> None:
        """End the runs whose executor died; queue again the runs Redis may have lost."""
        cluster = self.cluster
        life, uptime = await server_life(cluster.redis)
        now = time.time()
        unexecuted: set[str] = set()
        for execution in await cluster.executions.open():
            run_id, executor = execution.run_id, execution.executor
            if run_id in self._ending:
                await self._end_taken(run_id, self._ending[run_id])  # again, after a failure
                continue
            if executor is None:
                # Queued a while ago and still unclaimed: its entry may be gone (Redis
                # restarted, or queueing failed); queue it again once per Redis life.
                waited = now - execution.queued_at
                if waited > cluster.lease_s and self._requeued.get(run_id) != life:
                    self._requeued[run_id] = life
                    await self._queue_again(run_id)
                continue
            if executor == cluster.node_id:
                if not cluster.executes(run_id):
                    unexecuted.add(run_id)
                    if run_id in self._unexecuted:
                        # Left without an executor: this node's claim or take-over was made
                        # but its answer lost, or its `done` could not be stored (the database
                        # gone a moment). Seen so at two sweeps in a row: no answer is due.
                        self._ending[run_id] = executor
                        await self._end_taken(run_id, executor)
                continue
            if uptime < cluster.lease_s:
                continue  # Redis is too young to know who is alive
            if await cluster.redis.exists(cluster.keys.node(executor)):
                continue
            if await cluster.executions.take_over(run_id, executor, cluster.node_id):
                self._ending[run_id] = executor
                await self._end_taken(run_id, executor)
        self._requeued = {run_id: seen for run_id, seen in self._requeued.items() if seen == life}
        self._unexecuted = unexecuted
        if uptime >= cluster.lease_s:  # old enough to know who is alive
            await forget_departed(
                cluster.redis, cluster.keys, me=cluster.node_id, lease_s=cluster.lease_s
            )

    async def _queue_again(self, run_id: str) -> None:
        """Queue a run again, with its slot (and its owner's).

        Its API node may have died before it queued the run, or Redis may have restarted and
        lost both.
        """
        owner = None
        if self.cluster.counts_owners:
            record = await self.cluster.log.get_run(run_id)
            owner = None if record is None else record.owner
        await self.cluster.queue(run_id, owner)

    async def _end_taken(self, run_id: str, executor: str) -> None:
        """End a run taken over from `executor`; kept for the next sweep if that fails."""
        await self._end_lost(run_id, executor)
        del self._ending[run_id]

    async def _end_lost(self, run_id: str, executor: str) -> None:
        """End a run whose executor died, for every listener on every node.

        What reached its live window is kept, then come `error` worker_lost and `done` failed.
        """
        cluster, store = self.cluster, self.cluster.log.store
        record = await cluster.log.get_run(run_id)
        if record is None:
            return
        cluster.adopt(record)
        stored = await store.stored_events(run_id, after=0) or []
        if not stored or stored[-1][2] != "done":
            await store.resume(run_id)
            events = [Event._make(row) for row in stored]
            with contextlib.suppress(*ERRORS):
                # What the executor published but had not yet committed.
                window: Any = await cluster.redis.xrange(
                    cluster.keys.events(run_id), min=entry_id(len(events) + 1)
                )
                for entry in window:
                    row = row_of(run_id, entry)
                    if row[1] != len(events) + 1:
                        break
                    event = Event._make(row)
                    await store.append(event)
                    events.append(event)
            if not events or not events[-1].is_final:
                message = (
                    f"the process executing the run ({executor}) stopped answering for "
                    f"{cluster.lease_s:g} s; ask again"
                    if executor != cluster.node_id
                    else f"the run was left without an executor on {executor} (the database "
                    "was unreachable a moment); ask again"
                )
                await end_open_runs(cluster.log, [record], code="worker_lost", message=message)
        await cluster.record_end(run_id)
        log.warning("run %s: its executor %s was lost; the run was ended", run_id, executor)
