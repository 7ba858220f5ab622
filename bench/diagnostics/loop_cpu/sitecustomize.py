"""Diagnostic (bench/README.md, issue 16): the event loop thread's CPU, summed by callback.

With this folder on `PYTHONPATH` and `LOOP_CPU_OUT=FILE` in the environment, a
`research-service serve` or the scale bench's bare aiohttp server times each event-loop
callback by the loop thread's own CPU clock (`time.thread_time()`, a wrapper of
`asyncio.Handle._run`) and sums it by label: a task's step by its coroutine's name, any other
callback by its own. SIGUSR1 starts the sums afresh; SIGUSR2 writes them to FILE as JSON,
`{label: [cpu_seconds, calls]}`. The wrapper costs a few µs a callback. Not part of the service.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys
import time
from typing import Any

OUT = os.environ.get("LOOP_CPU_OUT")
SERVER = "serve" in sys.argv or any("scale_baseline" in arg for arg in sys.argv)

cpu: collections.Counter[str] = collections.Counter()
calls: collections.Counter[str] = collections.Counter()


def label(handle: asyncio.Handle) -> str:
    """What a callback is: `task:<coroutine>` for a task's step, else the callable's name."""
    callback = handle._callback  # type: ignore[attr-defined]
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coroutine = owner.get_coro()
        return "task:" + getattr(coroutine, "__qualname__", repr(coroutine))
    name: str = getattr(callback, "__qualname__", None) or type(callback).__name__
    if owner is not None:
        name = f"{type(owner).__name__}.{name.rsplit('.', 1)[-1]}"
    return name


def install(out: str) -> None:
    """Wrap every callback's run; SIGUSR1 resets, SIGUSR2 writes `out`."""
    run = asyncio.Handle._run
    clock = time.thread_time

    def timed_run(self: asyncio.Handle) -> None:
        began = clock()
        try:
            run(self)
        finally:
            name = label(self)
            cpu[name] += clock() - began
            calls[name] += 1

    def reset(*_: Any) -> None:
        cpu.clear()
        calls.clear()

    def write(*_: Any) -> None:
        with open(out, "w", encoding="utf-8") as file:
            json.dump({name: [cpu[name], calls[name]] for name in cpu}, file)

    asyncio.Handle._run = timed_run  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, reset)
    signal.signal(signal.SIGUSR2, write)


if OUT and SERVER:
    install(OUT)
