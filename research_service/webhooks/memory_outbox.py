"""The outbox of `--store memory`: gone with the process, as its runs are.

It answers as the SQL outboxes do (webhooks/sql_outbox.py), without looking at every delivery
it keeps: a look at the outbox (every second while any is pending) costs what is due, not what
waits. A delivery waits beside its run until the run has ended, then in its key's queue
(a heap by next attempt); ended deliveries are kept for snapshots, the oldest forgotten first;
a run deleted by retention takes its deliveries with it (as the SQL stores' foreign key does).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from research_service.webhooks.outbox import BATCH, Delivery, in_turns

#: Ended deliveries the memory outbox remembers (for snapshots), the oldest forgotten first.
MEMORY_ENDED_KEPT: Final = 10_000

#: A delivery's place in its queue: (next_at, created_at, id).
_Entry = tuple[float, float, str]


class EndingRuns(Protocol):
    """What the outbox asks of the memory run store (runs/memory_log.py)."""

    def run_ended(self, run_id: str) -> bool | None:
        """True once it has its `done`; None when there is no such run (or it was deleted)."""
        ...

    def on_delete(self, hook: Callable[[str], None]) -> None:
        """Call `hook(run_id)` for each run retention deletes."""
        ...


class MemoryOutbox:
    """Deliveries in process memory, indexed so a look costs what is due."""

    def __init__(self, runs: EndingRuns | None = None) -> None:
        #: Without a run store to ask, every run counts as ended (the dispatcher checks).
        self._runs = runs
        if runs is not None:
            runs.on_delete(self._drop_run)
        self._deliveries: dict[str, Delivery] = {}
        self._of_run: dict[str, list[str]] = {}
        self._held: dict[str, float] = {}
        self._ended: deque[str] = deque()
        self._pending = 0
        #: Pending deliveries of runs not yet ended, by run.
        self._waiting: dict[str, list[str]] = {}
        #: Pending deliveries of ended runs: a heap per scope. Entries go stale when their
        #: delivery is saved anew; a stale one is dropped when it comes to the top.
        self._queues: dict[str, list[_Entry]] = {}

    async def add(self, deliveries: Sequence[Delivery]) -> None:
        """Keep new deliveries; they wait for their run to end."""
        for delivery in deliveries:
            if delivery.id in self._deliveries:
                continue
            self._keep(delivery)
            if delivery.state == "pending":
                self._pending += 1
                self._waiting.setdefault(delivery.run_id, []).append(delivery.id)

    async def due(self, *, now: float, limit: int = BATCH) -> list[Delivery]:
        """Pending, due, not held and of an ended run; the scopes taking turns (`in_turns`)."""
        self._admit()
        found: list[list[Delivery]] = []
        for scope, queue in list(self._queues.items()):
            mine = self._due_of(queue, now=now, limit=limit)
            if mine:
                found.append(mine)
            if not queue:
                del self._queues[scope]
        return in_turns(found, limit)

    def _due_of(self, queue: list[_Entry], *, now: float, limit: int) -> list[Delivery]:
        """Up to `limit` of one queue's due deliveries; every live entry looked at stays."""
        mine: list[Delivery] = []
        kept: list[_Entry] = []
        seen: set[str] = set()
        while queue and queue[0][0] <= now and len(mine) < limit:
            entry = heapq.heappop(queue)
            delivery = self._deliveries.get(entry[2])
            if delivery is None or delivery.state != "pending" or delivery.next_at != entry[0]:
                continue  # stale: saved anew since, ended, or forgotten
            if entry[2] in seen:
                continue  # the same delivery queued twice (saved with the same next_at)
            seen.add(entry[2])
            kept.append(entry)
            if self._held.get(entry[2], 0.0) <= now:
                mine.append(delivery)
        for entry in kept:
            heapq.heappush(queue, entry)
        return mine

    def _admit(self) -> None:
        """Queue the waiting deliveries whose run has ended (drop any of an unknown run)."""
        for run_id in list(self._waiting):
            ended = True if self._runs is None else self._runs.run_ended(run_id)
            if ended is None:
                self._drop_run(run_id)
            elif ended:
                for delivery_id in self._waiting.pop(run_id):
                    self._queue(self._deliveries[delivery_id])

    def _queue(self, delivery: Delivery) -> None:
        entry = (delivery.next_at, delivery.created_at, delivery.id)
        heapq.heappush(self._queues.setdefault(delivery.scope, []), entry)

    async def claim(self, delivery_id: str, *, now: float, until: float) -> bool:
        """Hold it unless held."""
        if self._held.get(delivery_id, 0.0) > now:
            return False
        self._held[delivery_id] = until
        return True

    async def save(self, delivery: Delivery, *, hold_until: float | None = None) -> None:
        """Record the outcome; beyond MEMORY_ENDED_KEPT ended ones, forget the oldest."""
        before = self._deliveries.get(delivery.id)
        if before is None:
            return  # its run was deleted meanwhile: nothing is owed any more
        self._deliveries[delivery.id] = delivery
        self._pending += (delivery.state == "pending") - (before.state == "pending")
        if hold_until is None:
            self._held.pop(delivery.id, None)
        else:
            self._held[delivery.id] = hold_until
        if delivery.state == "pending":
            if delivery.run_id not in self._waiting:
                self._queue(delivery)
            return
        self._ended.append(delivery.id)
        while len(self._ended) > MEMORY_ENDED_KEPT:
            self._forget(self._ended.popleft())

    def _keep(self, delivery: Delivery) -> None:
        self._deliveries[delivery.id] = delivery
        self._of_run.setdefault(delivery.run_id, []).append(delivery.id)

    def _forget(self, delivery_id: str) -> None:
        delivery = self._deliveries.pop(delivery_id, None)
        if delivery is None:
            return
        self._held.pop(delivery_id, None)
        if delivery.state == "pending":
            self._pending -= 1
        ids = self._of_run.get(delivery.run_id, [])
        if delivery_id in ids:
            ids.remove(delivery_id)
        if not ids:
            self._of_run.pop(delivery.run_id, None)

    def _drop_run(self, run_id: str) -> None:
        """A deleted run's deliveries go with it (their queue entries go stale)."""
        self._waiting.pop(run_id, None)
        for delivery_id in list(self._of_run.get(run_id, ())):
            self._forget(delivery_id)

    async def release(self) -> None:
        """Drop every hold."""
        self._held.clear()

    async def pending(self) -> bool:
        """Whether any delivery is pending."""
        return self._pending > 0

    async def of_run(self, run_id: str) -> list[Delivery]:
        """The run's deliveries, in the order they were made."""
        found = [self._deliveries[i] for i in self._of_run.get(run_id, ())]
        return sorted(found, key=lambda d: d.created_at)
