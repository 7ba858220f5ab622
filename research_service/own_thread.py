"""A thread of a component's own for its blocking work, instead of asyncio's default executor.

The default executor is shared: a run store's write or an API key's lookup queued there waits
behind local searches and page reads. Each component that must not wait so keeps one of these.

A *background* thread (CPU-heavy work nobody is waiting on token by token: the local search,
the builtin model) runs at a lower scheduling priority than the event loop's thread, by
`set_background_nice`. On one busy core the kernel otherwise shares the CPU between the loop
and such a thread in 4 ms ticks, and every listener's next event waits for them
(bench/README.md, "The event loop before the background threads").
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from research_service import loop_turns
from research_service.defaults import MAX_NICE

T = TypeVar("T")

log = logging.getLogger(__name__)


class OwnThread:
    """One worker thread; `call` runs a blocking function on it and awaits the result."""

    #: How many nice steps below the thread that starts them background threads run.
    background_nice: ClassVar[int] = 0

    def __init__(self, name: str, *, background: bool = False) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=name,
            initializer=_enter_background if background else None,
        )
        self.closed = False
        self._gate = loop_turns.SHARED if background else None

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the thread.

        A background thread's results wake their callers a few per loop turn (`loop_turns`).
        """
        result = await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        if self._gate is not None:
            await self._gate.turn()
        return result

    def close(self) -> None:
        """Take no more work (`call` then raises RuntimeError); the thread ends once idle."""
        self.closed = True
        self._executor.shutdown(wait=False)


def set_background_nice(increment: int) -> None:
    """Run the background threads started from now on `increment` (0-19) nice steps lower.

    Set it before any starts (`serve` does, first thing). A no-op off Linux, where a nice
    value belongs to the whole process rather than to one thread.
    """
    if not 0 <= increment <= MAX_NICE:
        raise ValueError(f"a nice increment is 0-{MAX_NICE}, got {increment}")
    OwnThread.background_nice = increment


def _enter_background() -> None:
    """A background thread's first step: lower its own priority as set."""
    increment = OwnThread.background_nice
    if sys.platform != "linux" or not increment:
        return
    # On Linux a nice value is a thread's own, and PRIO_PROCESS with a thread id sets just it.
    native_id = threading.get_native_id()
    try:
        base = os.getpriority(os.PRIO_PROCESS, native_id)
        os.setpriority(os.PRIO_PROCESS, native_id, min(MAX_NICE, base + increment))
    except OSError as error:  # a sandbox that forbids it: the thread still works, level
        log.warning("could not lower the priority of thread %s: %s", native_id, error)
