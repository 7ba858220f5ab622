"""Group commit: writes that arrive while one is being committed are committed together.

A burst of `POST /v1/runs` made one transaction per run on the store's thread, one after the
other: at 300 runs at once the last waited ~100 ms behind the others. Here the first write
goes at once; those that arrive meanwhile wait for it and then go in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Commits a group: for each item, None (stored) or the exception that item alone met.
#: Raising fails the whole group with that exception.
WriteGroup = Callable[[list[T]], Awaitable[list[BaseException | None]]]


class GroupCommit(Generic[T]):
    """Queues items; one task commits whatever is queued, a group at a time, until none is."""

    def __init__(self, write: WriteGroup[T], *, name: str) -> None:
        self._write = write
        self._name = name
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def commit(self, item: T) -> None:
        """Return once `item` is committed; raise what its group (or it alone) met."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=self._name)
        await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                group, self._queue = self._queue, []
                try:
                    outcomes = await self._write([item for item, _ in group])
                except Exception as exc:  # noqa: BLE001 - handed to every waiter of the group
                    outcomes = [exc] * len(group)
                for (_, future), outcome in zip(group, outcomes, strict=True):
                    if future.done():  # its request went away meanwhile
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)
        finally:
            self._task = None
            for _, future in self._queue:  # only when cancelled: the store is closing
                if not future.done():
                    future.cancel()
            self._queue = []
