"""Diagnostic (bench/README.md, issue 16): an event loop whose epoll hands out few sockets a turn.

With this folder on `PYTHONPATH` and `MAXEVENTS=N` (N > 0) in the environment, a
`research-service serve` or the scale bench's bare aiohttp server runs on an asyncio loop
whose selector passes `maxevents=N` to `epoll_wait`: each loop iteration gets at most N ready
sockets, the others wait for the next turns (the kernel hands them out in turn). Other
processes, and `MAXEVENTS` unset or 0, keep asyncio's own loop. Not part of the service.
"""

from __future__ import annotations

import asyncio
import math
import os
import select
import selectors
import sys
from typing import Any

CAP = int(os.environ.get("MAXEVENTS", "0") or 0)
SERVER = "serve" in sys.argv or any("scale_baseline" in arg for arg in sys.argv)


class CappedEpollSelector(selectors.EpollSelector):
    """`selectors.EpollSelector.select` (CPython 3.11) with `maxevents` capped at CAP."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            timeout = -1
        elif timeout <= 0:
            timeout = 0
        else:
            timeout = math.ceil(timeout * 1e3) * 1e-3
        fd_to_key: dict[int, Any] = self._fd_to_key  # type: ignore[attr-defined]
        max_ev = max(min(len(fd_to_key), CAP), 1)
        ready: list[tuple[selectors.SelectorKey, int]] = []
        try:
            fd_event_list = self._selector.poll(timeout, max_ev)  # type: ignore[attr-defined]
        except InterruptedError:
            return ready
        for fd, event in fd_event_list:
            events = 0
            if event & ~select.EPOLLIN:
                events |= selectors.EVENT_WRITE
            if event & ~select.EPOLLOUT:
                events |= selectors.EVENT_READ
            key = self._key_from_fd(fd)  # type: ignore[attr-defined]
            if key:
                ready.append((key, events & key.events))
        return ready


class CappedPolicy(asyncio.DefaultEventLoopPolicy):
    """New loops select with CappedEpollSelector."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(CappedEpollSelector())


if CAP > 0 and SERVER:
    asyncio.set_event_loop_policy(CappedPolicy())
    print(f"epoll_cap: at most {CAP} ready sockets per loop turn", file=sys.stderr)
