"""Readers waiting for a run's next event: the one wait-and-wake mechanism every store uses."""

from __future__ import annotations

import asyncio


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Waiters:
    """Waits keyed by run id, each on a future of its own, woken per run or all at once.

    One future per waiter: cancelling one wait never cancels anyone else's.
    """

    __slots__ = ("_by_run",)

    def __init__(self) -> None:
        self._by_run: dict[str, set[asyncio.Future[None]]] = {}

    def waiting(self, run_id: str) -> int:
        """How many readers wait for the run now."""
        return len(self._by_run.get(run_id, ()))

    async def wait(self, run_id: str, *, timeout: float) -> None:
        """Return once the run is woken (or everyone is), or after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters = self._by_run.setdefault(run_id, set())
        waiters.add(waiter)
        # A plain timer is far cheaper than asyncio.timeout() on this per-event path.
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            waiters.discard(waiter)
            # A wake takes the run's set away; only an emptied set still in place is dropped.
            if not waiters and self._by_run.get(run_id) is waiters:
                del self._by_run[run_id]

    def wake(self, run_id: str) -> None:
        """Wake every reader waiting for the run."""
        waiters = self._by_run.pop(run_id, None)
        if waiters:
            for waiter in waiters:
                _resolve(waiter)

    def wake_all(self) -> None:
        """Wake every reader of every run (the store is closing)."""
        by_run, self._by_run = self._by_run, {}
        for waiters in by_run.values():
            for waiter in waiters:
                _resolve(waiter)
