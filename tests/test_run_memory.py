"""The durable stores' memory: a run deleted while it is being read back is not cached after.

Found by tests/test_postgres_store.py's retention test failing under CI load: a `GET` of the
old run read it back while the pruning deleted it, and cached it after the delete, so the
deleted run was served until the cache let it go. Here the read is held at the exact point.
"""

from __future__ import annotations

import asyncio

from research_service.runs.models import RunRecord
from research_service.runs.run_memory import Row, RunMemory

RECORD = RunRecord("a" * 16, "old?")
ROWS: list[Row] = [(RECORD.id, 1, "done", 1, b"event: done\ndata: {}\n\n")]


class HeldStore:
    """A loader whose reads wait for `release`, as a read in flight does; counts its reads."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reading = asyncio.Event()
        self.deleted = False
        self.reads = 0

    async def load(self, run_id: str) -> tuple[RunRecord, list[Row]] | None:
        self.reads += 1
        self.reading.set()
        found = None if self.deleted else (RECORD, list(ROWS))  # read before the delete
        await self.release.wait()
        return found


async def test_a_run_deleted_while_it_is_read_back_is_not_cached() -> None:
    store = HeldStore()
    memory = RunMemory(cache_size=8, load=store.load)
    reader = asyncio.create_task(memory.find(RECORD.id))
    await asyncio.wait_for(store.reading.wait(), 5)
    store.deleted = True
    memory.forget(RECORD.id)  # as prune does once its DELETE is committed
    store.release.set()
    assert await asyncio.wait_for(reader, 5) is None
    assert memory.get(RECORD.id) is None
    # The next reader asks the store again, and finds no run there.
    assert await asyncio.wait_for(memory.find(RECORD.id), 5) is None
    assert store.reads == 2


async def test_a_read_begun_after_the_forget_is_kept_and_shared() -> None:
    store = HeldStore()
    memory = RunMemory(cache_size=8, load=store.load)
    first = asyncio.create_task(memory.find(RECORD.id))
    await asyncio.wait_for(store.reading.wait(), 5)
    memory.forget(RECORD.id)  # disowns the first read; the run itself stays in the store
    second, third = (asyncio.create_task(memory.find(RECORD.id)) for _ in range(2))
    store.release.set()
    assert await asyncio.wait_for(first, 5) is None
    found = await asyncio.wait_for(second, 5)
    assert found is not None
    assert found.record == RECORD
    assert found.finished
    assert await asyncio.wait_for(third, 5) is found  # one read for both
    assert store.reads == 2
    assert memory.get(RECORD.id) is found  # cached: the next find reads nothing
    assert await memory.find(RECORD.id) is found
    assert store.reads == 2
