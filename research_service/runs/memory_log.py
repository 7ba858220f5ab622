"""The in-memory event-log backend: a list of events per run, readers woken by Waiters."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from research_service.events import Event
from research_service.runs.models import RunRecord, RunTail, tail_of
from research_service.runs.waiters import Waiters

#: Runs `prune` deletes between two turns of the event loop (about 4 ms, at 80 events a run).
PRUNE_BATCH: Final = 250


@dataclass(slots=True)
class _MemoryRun:
    record: RunRecord
    # Plain tuples, not Event instances: CPython's collector stops tracking an exact tuple
    # of atomic values, so a long history costs nothing at each garbage collection.
    events: list[tuple[str, int, str, int, bytes]] = field(default_factory=list)


class MemoryEventLog:
    """Keeps runs and events in process memory; for tests and `--store memory`.

    The retention limits apply as they do to the durable stores (`prune`), so a long-lived
    `--store memory` process holds at most about `--retention-runs` runs.
    """

    def __init__(self) -> None:
        self._runs: dict[str, _MemoryRun] = {}
        self._waiters = Waiters()
        # Sorted ascending by sort key; listing walks it backwards. One list of all runs and
        # one per owner, so a listing by owner never walks other owners' runs.
        self._order: list[tuple[float, str]] = []
        self._order_of: dict[str, list[tuple[float, str]]] = {}
        # The runs without their `done` yet, sorted the same way (few: the runs going).
        self._open: list[tuple[float, str]] = []
        #: Called with each run `prune` deletes: the memory outbox drops the run's deliveries.
        self._on_delete: list[Callable[[str], None]] = []

    def on_delete(self, hook: Callable[[str], None]) -> None:
        """Call `hook(run_id)` for each run `prune` deletes (as a foreign key's cascade)."""
        self._on_delete.append(hook)

    async def create_run(self, record: RunRecord) -> None:
        """Store a new run record; its log starts empty."""
        if record.id in self._runs:
            raise ValueError(f"run {record.id} already exists")
        self._runs[record.id] = _MemoryRun(record)
        bisect.insort(self._order, record.sort_key)
        bisect.insort(self._open, record.sort_key)
        if record.owner is not None:
            bisect.insort(self._order_of.setdefault(record.owner, []), record.sort_key)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's record, or None when there is no such run."""
        log = self._runs.get(run_id)
        return None if log is None else log.record

    async def list_runs(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        owner: str | None = None,
        unfinished: bool = False,
    ) -> list[RunRecord]:
        """Up to `limit` records, newest first, strictly older than `before`, of `owner`."""
        if unfinished:
            return self._unfinished(limit=limit, before=before, owner=owner)
        order = self._order if owner is None else self._order_of.get(owner, [])
        end = len(order) if before is None else bisect.bisect_left(order, before)
        keys = order[max(0, end - limit) : end]
        return [self._runs[run_id].record for _, run_id in reversed(keys)]

    def _unfinished(
        self, *, limit: int, before: tuple[float, str] | None, owner: str | None
    ) -> list[RunRecord]:
        end = len(self._open) if before is None else bisect.bisect_left(self._open, before)
        found: list[RunRecord] = []
        for _, run_id in reversed(self._open[:end]):
            record = self._runs[run_id].record
            if owner is None or record.owner == owner:
                found.append(record)
                if len(found) == limit:
                    break
        return found

    async def tails(self, run_ids: Sequence[str]) -> dict[str, RunTail]:
        """Each known run's event count and ending."""
        return {i: tail_of(self._runs[i].events) for i in run_ids if i in self._runs}

    async def append(self, event: Event) -> None:
        """Append `event` and wake the run's waiters."""
        log = self._runs[event.run_id]
        if event.seq != len(log.events) + 1:
            raise ValueError(f"event seq {event.seq} does not follow {len(log.events)}")
        log.events.append(tuple.__new__(tuple, event))
        if event.name == "done":
            key = log.record.sort_key
            at = bisect.bisect_left(self._open, key)
            if at < len(self._open) and self._open[at] == key:
                del self._open[at]
        self._waiters.wake(event.run_id)

    async def read(self, run_id: str, *, after: int, limit: int | None = None) -> list[Event]:
        """The run's stored events with seq > `after`, in order, at most `limit` of them."""
        events = self._runs[run_id].events
        stored = events[after:] if limit is None else events[after : after + limit]
        return [Event._make(row) for row in stored]

    async def wait(self, run_id: str, *, after: int, timeout: float) -> bool:
        """Wait until the run has an event with seq > `after`; False on timeout."""
        log = self._runs[run_id]
        if len(log.events) > after:
            return True
        await self._waiters.wait(run_id, timeout=timeout)
        return len(log.events) > after

    async def prune(self, *, max_age_s: float | None, max_runs: int | None) -> int:
        """Delete finished runs older than `max_age_s` or beyond the newest `max_runs`.

        As the durable stores count them: every run counts towards `max_runs`, and runs not
        yet ended are never deleted. Returns how many went. A reader of a deleted run gets
        KeyError, as for an unknown one. Only the oldest runs are looked at (those past
        either limit), PRUNE_BATCH at a time with a turn of the event loop between, so a
        large deletion never holds the loop for long.
        """
        cutoff = float("-inf") if max_age_s is None else time.time() - max_age_s
        removed = going = 0  # `going`: the oldest runs that have not ended, kept in front
        while True:
            too_old = bisect.bisect_left(self._order, (cutoff, ""))
            surplus = 0 if max_runs is None else len(self._order) - max_runs
            batch = self._order[going : min(max(too_old, surplus), going + PRUNE_BATCH)]
            if not batch:
                return removed
            gone = self._delete(batch, at=going)
            going += len(batch) - gone
            removed += gone
            await asyncio.sleep(0)

    def _delete(self, batch: list[tuple[float, str]], *, at: int) -> int:
        """Delete the ended runs of `batch`, the sort keys `self._order[at:]` starts with."""
        gone = {run_id for _, run_id in batch if self._ended(run_id)}
        if not gone:
            return 0
        self._order[at : at + len(batch)] = [key for key in batch if key[1] not in gone]
        newest_of: dict[str, tuple[float, str]] = {}  # each owner's newest run that goes
        for run_id in gone:
            record = self._runs.pop(run_id).record
            for hook in self._on_delete:
                hook(run_id)
            if record.owner is not None:
                newest = newest_of.get(record.owner, record.sort_key)
                newest_of[record.owner] = max(newest, record.sort_key)
        for owner, newest in newest_of.items():
            mine = self._order_of[owner]
            end = bisect.bisect_right(mine, newest)
            mine[:end] = [key for key in mine[:end] if key[1] not in gone]
            if not mine:
                del self._order_of[owner]
        return len(gone)

    def _ended(self, run_id: str) -> bool:
        return self.run_ended(run_id) is True

    def run_ended(self, run_id: str) -> bool | None:
        """True once the run has its `done`; None when there is no such run (or it was deleted)."""
        run = self._runs.get(run_id)
        if run is None:
            return None
        return bool(run.events) and run.events[-1][2] == "done"

    async def close(self) -> None:
        """Wake every waiter; the data simply goes with the process."""
        self._waiters.wake_all()
