"""Appending to a durable store's run: in memory at once, on disk by the write-behind queue.

The SQLite and PostgreSQL stores append the same way; each says how a run is checked open and
retired once its `done` is stored.
"""

from __future__ import annotations

from collections.abc import Callable

from research_service.events import Event
from research_service.runs.batch_writer import BatchWriter
from research_service.runs.run_memory import MemoryRun, Row, RunMemory


async def append_event(
    memory: RunMemory,
    writer: BatchWriter,
    event: Event,
    *,
    check_open: Callable[[], None],
    retire: Callable[[str, MemoryRun], None],
) -> None:
    """Append `event`, wake the run's readers and queue the event for the writer.

    A `done` returns only once it is stored, and only then do readers see it;
    StoreUnavailable (from `check_open` or the writer) if the store closes first.
    """
    check_open()
    run = memory.live.get(event.run_id)
    if run is None:
        run = await memory.find(event.run_id)
        if run is None:
            raise KeyError(event.run_id)
        check_open()  # the store may have closed while the run was read back
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
        retire(event.run_id, run)
        memory.waiters.wake(event.run_id)
        return
    if writer.backlogged:
        # The store is not keeping up (or is down): the run waits, memory stays bounded.
        await writer.room()
        check_open()
    run.events.append(row)
    memory.waiters.wake(event.run_id)
    writer.queue(row)
