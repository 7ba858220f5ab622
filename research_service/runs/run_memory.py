"""What a durable run store keeps in memory: the runs it writes, finished runs read back, readers.

The SQLite and PostgreSQL stores share it: memory is the truth for a run this process is
writing (its events reach readers before they reach the disk), and the last few finished runs
read back are kept, least recently used first. Each store says how a run is read back.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

from research_service.events import Event
from research_service.runs.models import RunRecord
from research_service.runs.waiters import Waiters

# Exact tuples (run_id, seq, name, t_ms, wire): untracked by the cyclic collector.
Row: TypeAlias = tuple[str, int, str, int, bytes]
#: Reads a run back from the store: its record and every event, or None when there is none.
Loader: TypeAlias = Callable[[str], Awaitable[tuple[RunRecord, list[Row]] | None]]


@dataclass(slots=True)
class MemoryRun:
    """One run's record and events, as far as this process has them."""

    record: RunRecord
    events: list[Row]
    #: Events of the run already committed to the store.
    flushed: int = 0
    finished: bool = False


class RunMemory:
    """The runs a store holds in memory, how they are read back, and their waiting readers."""

    def __init__(self, *, cache_size: int, load: Loader, cache_unfinished: bool = True) -> None:
        self._cache_size = cache_size
        self._load_stored = load
        # False when another process may still be writing a stored run (cluster mode): only
        # finished runs read back are then kept, as nothing would update an unfinished copy.
        self._cache_unfinished = cache_unfinished
        # Runs with events not yet stored, or not finished: memory is their truth.
        self.live: dict[str, MemoryRun] = {}
        # Finished runs read back (or just written), least recently used first.
        self._cache: OrderedDict[str, MemoryRun] = OrderedDict()
        self._loading: dict[str, asyncio.Task[MemoryRun | None]] = {}
        self.waiters = Waiters()

    def start(self, record: RunRecord) -> None:
        """A new run, its log empty, written by this process."""
        self.live[record.id] = MemoryRun(record, [])

    def get(self, run_id: str) -> MemoryRun | None:
        """The run if it is in memory (live or cached), without reading the store."""
        run = self.live.get(run_id)
        if run is None:
            run = self._cache.get(run_id)
            if run is not None:
                self._cache.move_to_end(run_id)
        return run

    def forget(self, run_id: str) -> None:
        """Drop a run deleted from the store: its cached copy, and any read of it under way.

        What a read found before the delete must not be cached after it: readers would be
        served the deleted run until the cache let it go.
        """
        self._cache.pop(run_id, None)
        self._loading.pop(run_id, None)

    def retire(self, run_id: str, run: MemoryRun) -> None:
        """A finished run whose events are all stored leaves the live set for the cache."""
        if self.live.get(run_id) is run:
            del self.live[run_id]
            self._remember(run_id, run)

    def revive(self, run_id: str, run: MemoryRun) -> None:
        """A stored run written to again (an interrupted run being ended): live once more."""
        self._cache.pop(run_id, None)
        self.live[run_id] = run

    async def find(self, run_id: str) -> MemoryRun | None:
        """The run from memory, else read back from the store (once for all callers)."""
        run = self.get(run_id)
        if run is not None:
            return run
        task = self._loading.get(run_id)
        if task is None:
            task = asyncio.create_task(self._load(run_id))
            self._loading[run_id] = task
            task.add_done_callback(functools.partial(self._loaded, run_id))
        # Shielded: a reader that gives up must not cancel the load other readers await.
        return await asyncio.shield(task)

    async def read(self, run_id: str, *, after: int, limit: int | None = None) -> list[Event]:
        """The run's events with seq > `after`, in order, at most `limit`; KeyError if none."""
        run = await self.find(run_id)
        if run is None:
            raise KeyError(run_id)
        events = run.events
        stored = events[after:] if limit is None else events[after : after + limit]
        return [Event._make(row) for row in stored]

    async def wait(self, run_id: str, *, after: int, timeout: float, closed: bool) -> bool:
        """Wait until the run has an event with seq > `after`; False on timeout or when closed."""
        run = await self.find(run_id)
        if run is None:
            raise KeyError(run_id)
        if len(run.events) > after or closed:
            return len(run.events) > after
        await self.waiters.wait(run_id, timeout=timeout)
        # Appends go to the run's current in-memory log, which may be a fresh copy by now.
        current = self.get(run_id) or run
        return len(current.events) > after

    def _remember(self, run_id: str, run: MemoryRun) -> None:
        self._cache[run_id] = run
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _loaded(self, run_id: str, task: asyncio.Task[MemoryRun | None]) -> None:
        if self._loading.get(run_id) is task:  # not a newer read begun after a `forget`
            del self._loading[run_id]

    async def _load(self, run_id: str) -> MemoryRun | None:
        stored = await self._load_stored(run_id)
        if self._loading.get(run_id) is not asyncio.current_task():
            return None  # deleted while it was being read: `forget` disowned this read
        run = self.get(run_id)
        if run is not None or stored is None:
            return run
        record, events = stored
        run = MemoryRun(record, events, flushed=len(events))
        run.finished = bool(events) and events[-1][2] == "done"
        if run.finished or self._cache_unfinished:
            self._remember(run_id, run)
        return run
