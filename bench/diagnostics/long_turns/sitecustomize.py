"""Diagnostic (bench/README.md, issue 16): every long event-loop turn, and what filled it.

With this folder on `PYTHONPATH` and `LONG_TURNS_OUT=PREFIX` in the environment, each process
whose command line contains `LONG_TURNS_ONLY` (default `serve`: the service, not the bench's
client) appends to `PREFIX.<pid>` a line for every loop turn whose callbacks took longer than
`LONG_TURNS_MS` (default 8) of wall time, the wait in `epoll` left out: when it ended, how
long, how many callbacks, the collector's share (and whether a full collection ran), then the
callbacks' time and count by label, longest first. A task's step is labelled by its
coroutine's name and the innermost coroutine it awaits when the step ends
(`task:RequestHandler._handle_request>_Turns.turn`), any other callback by its own name.

A loop-stall reading of the scale bench spans two or three turns; this shows which. The
wrapper costs a few µs a callback. Not part of the service.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import collections
import gc
import os
import sys
import time
from typing import Any

OUT = os.environ.get("LONG_TURNS_OUT")
ONLY = os.environ.get("LONG_TURNS_ONLY", "serve")
LONG_S = float(os.environ.get("LONG_TURNS_MS", "8")) / 1000
TOP = 8


def label(handle: asyncio.Handle) -> str:
    """`task:<coroutine>><innermost awaited coroutine>` for a task's step, else the callable."""
    callback = handle._callback  # type: ignore[attr-defined]
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coroutine: Any = task.get_coro()
        outer = getattr(coroutine, "__qualname__", repr(coroutine))
        inner = outer
        while (awaited := getattr(coroutine, "cr_await", None)) is not None and hasattr(
            awaited, "cr_await"
        ):
            coroutine = awaited
            inner = getattr(coroutine, "__qualname__", inner)
        return f"task:{outer}>{inner}"
    return str(getattr(callback, "__qualname__", repr(callback)))[:80]


class Turn:
    """What the current turn has run so far."""

    def __init__(self) -> None:
        self.active = False
        self.spent: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.selecting = 0.0
        self.collecting = 0.0
        self.full = 0
        self.collection_began = 0.0

    def reset(self) -> None:
        self.active = True
        self.spent.clear()
        self.calls.clear()
        self.selecting = self.collecting = 0.0
        self.full = 0


def install(out_prefix: str) -> None:
    """Wrap asyncio's loop turn, its callbacks and its selector's wait; note the collector."""
    out = open(f"{out_prefix}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 - the process's life
    turn = Turn()

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            turn.collection_began = time.perf_counter()
            return
        turn.collecting += time.perf_counter() - turn.collection_began
        turn.full += info.get("generation") == 2

    gc.callbacks.append(on_collection)
    run_callback = asyncio.Handle._run

    def timed_run(self: asyncio.Handle) -> None:
        if not turn.active:
            run_callback(self)
            return
        began = time.perf_counter()
        try:
            run_callback(self)
        finally:
            name = label(self)
            turn.spent[name] += time.perf_counter() - began
            turn.calls[name] += 1

    asyncio.Handle._run = timed_run  # type: ignore[method-assign]
    run_once = asyncio.base_events.BaseEventLoop._run_once

    def timed_run_once(self: Any) -> None:
        selector = self._selector
        if not getattr(selector, "_long_turns_timed", False):
            select = selector.select

            def timed_select(timeout: float | None = None) -> Any:
                began = time.perf_counter()
                try:
                    return select(timeout)
                finally:
                    turn.selecting += time.perf_counter() - began

            selector.select = timed_select
            selector._long_turns_timed = True
        turn.reset()
        began = time.perf_counter()
        run_once(self)
        took = time.perf_counter() - began - turn.selecting
        turn.active = False
        if took > LONG_S:
            parts = "; ".join(
                f"{name} {spent * 1000:.1f} ms/{turn.calls[name]}"
                for name, spent in turn.spent.most_common(TOP)
            )
            out.write(
                f"{time.monotonic():.3f} turn {took * 1000:.1f} ms, "
                f"{sum(turn.calls.values())} callbacks, collector {turn.collecting * 1000:.1f} ms "
                f"(full {turn.full}): {parts}\n"
            )

    asyncio.base_events.BaseEventLoop._run_once = timed_run_once  # type: ignore[method-assign]


if OUT and ONLY in " ".join(sys.argv):
    install(OUT)
