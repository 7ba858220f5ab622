"""A thread of a component's own for its blocking work, instead of asyncio's default executor.

The default executor is shared: a run store's write or an API key's lookup queued there waits
behind local searches and page reads. Each component that must not wait so keeps one of these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class OwnThread:
    """One worker thread; `call` runs a blocking function on it and awaits the result."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.closed = False

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on the thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def close(self) -> None:
        """Take no more work (`call` then raises RuntimeError); the thread ends once idle."""
        self.closed = True
        self._executor.shutdown(wait=False)
