"""Appending to a durable store's run: in memory at once, on disk by the write-behind queue.

The SQLite and PostgreSQL stores append the same way; each says how a run is checked open and
retired once its `done` is stored.
"""

from __future__ import annotations

from collections.abc import Callable

from research_service.events import Event
from research_service.runs.batch_writer import BatchWriter
from research_service.runs.run_memory import MemoryRun, Row, RunMemory


class BufferedAppend:
    """A store's appends: `now` takes the common case at once, `later` every other one.

    A store's `append` is `if not appends.now(event): await appends.later(event)`: a token of
    a live run then costs no coroutine of its own (it is most of what a run appends).
    """

    __slots__ = ("_check_open", "_live", "_memory", "_retire", "_wake", "_writer")

    def __init__(
        self,
        memory: RunMemory,
        writer: BatchWriter,
        *,
        check_open: Callable[[], None],
        retire: Callable[[str, MemoryRun], None],
    ) -> None:
        self._memory = memory
        self._writer = writer
        self._check_open = check_open
        self._retire = retire
        self._live = memory.live
        self._wake = memory.waiters.wake

    def now(self, event: Event) -> bool:
        """Append `event` if that needs no wait: a run in memory, not a `done`, room to queue.

        False (nothing done) otherwise: then `later` appends it.
        """
        run = self._live.get(event.run_id)
        if run is None or event.name == "done" or self._writer.backlogged:
            return False
        self._check_open()
        if event.seq != len(run.events) + 1:
            raise ValueError(f"event seq {event.seq} does not follow {len(run.events)}")
        row: Row = tuple.__new__(tuple, event)
        run.events.append(row)
        self._wake(event.run_id)
        self._writer.queue(row)
        return True

    async def later(self, event: Event) -> None:
        """Append `event`, waiting as it needs: read the run back, store a `done`, room.

        A `done` returns only once it is stored, and only then do readers see it;
        StoreUnavailable (from `check_open` or the writer) if the store closes first.
        """
        memory, writer = self._memory, self._writer
        self._check_open()
        run = memory.live.get(event.run_id)
        if run is None:
            run = await memory.find(event.run_id)
            if run is None:
                raise KeyError(event.run_id)
            self._check_open()  # the store may have closed while the run was read back
            memory.revive(event.run_id, run)
        if event.seq != len(run.events) + 1:
            raise ValueError(f"event seq {event.seq} does not follow {len(run.events)}")
        row: Row = tuple.__new__(tuple, event)
        if event.name == "done":
            writer.queue(row, urgent=True)
            await writer.durable(urgent=True)
            run.events.append(row)
            run.finished = True
            # Batches commit in order: with the done, every event of the run is stored.
            self._retire(event.run_id, run)
            memory.waiters.wake(event.run_id)
            return
        if writer.backlogged:
            # The store is not keeping up (or is down): the run waits, memory stays bounded.
            await writer.room()
            self._check_open()
        run.events.append(row)
        memory.waiters.wake(event.run_id)
        writer.queue(row)
