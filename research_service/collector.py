"""When the cyclic garbage collector does its long work: at start-up, and while nothing runs.

CPython 3.11's full (generation 2) collection visits every tracked object the process has
made since start-up, in one go on the thread that triggered it: the event loop's. Two rules
keep those pauses out of everyone's streams:

- What start-up built (imports, the providers) is frozen out of the collector's reach
  (`freeze_startup_objects`): ~100,000 objects, 85-100 ms a full collection otherwise.
- A burst of runs makes its own heap (300 runs at once: ~70,000 tasks, coroutines, timers,
  requests) and with it a full collection of 9-14 ms in the middle of the burst, the longest
  loop turn left (bench/README.md, "A descriptor table sized at start-up; full collections
  while nothing runs"). So CPython considers a full collection ten times less often than it
  would (`DEFERRED_FULL_THRESHOLD`; its own rule, that what was promoted since the last one
  exceed a quarter of what survived it, still holds), and `collect_when_quiet` runs one as
  soon as the usual threshold has been passed and no run is executing and no stream is open:
  nobody's next event waits for it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

#: Generation-1 collections between two full ones CPython itself considers (its default: 10).
DEFERRED_FULL_THRESHOLD: Final = 100
#: How often `collect_when_quiet` looks whether a full collection is due and nothing runs.
QUIET_CHECK_S: Final = 1.0


def freeze_startup_objects() -> None:
    """Move what start-up built (imports, the providers) out of the collector's reach.

    Without it every full collection re-scans ~100,000 long-lived objects (the openai,
    pydantic and HTTP client imports): 85-100 ms pauses in the middle of streams, measured by
    the relay benchmark.
    """
    global _frozen_objects  # noqa: PLW0603 - counted once here, read by every scrape
    gc.collect()
    gc.freeze()
    _frozen_objects = gc.get_freeze_count()


def frozen_objects() -> int:
    """How many objects `freeze_startup_objects` left out of the collector's reach (0 before).

    Counted when they are frozen: `gc.get_freeze_count()` walks the whole frozen list, 4-10
    ms for 100,000 objects on the event loop's thread (bench/README.md, "A scrape that
    walked the frozen heap").
    """
    return _frozen_objects


_frozen_objects = 0


def defer_full_collections() -> int:
    """Make CPython consider full collections `DEFERRED_FULL_THRESHOLD` times less often.

    Returns the threshold that was in force: the point at which `collect_when_quiet` takes
    a full collection as due.
    """
    global _usual_full_threshold  # noqa: PLW0603 - what it was before this process changed it
    first, second, now = gc.get_threshold()
    if _usual_full_threshold is None:
        _usual_full_threshold = now
    if now < DEFERRED_FULL_THRESHOLD:
        gc.set_threshold(first, second, DEFERRED_FULL_THRESHOLD)
    return min(_usual_full_threshold, DEFERRED_FULL_THRESHOLD)


_usual_full_threshold: int | None = None
_quiet_collections = 0


def quiet_collections() -> int:
    """How many full collections `collect_when_quiet` has taken in this process."""
    return _quiet_collections


def full_collections() -> int:
    """How many full collections this process has made in all (CPython's count)."""
    return int(gc.get_stats()[2]["collections"])


def start_quiet_collections(quiet: Callable[[], bool]) -> asyncio.Task[None]:
    """Defer CPython's full collections and take them while `quiet()`; cancel to stop.

    Call it after `freeze_startup_objects`, once start-up is done.
    """
    return asyncio.create_task(
        collect_when_quiet(quiet, due_after=defer_full_collections()), name="collect-when-quiet"
    )


async def collect_when_quiet(
    quiet: Callable[[], bool], *, due_after: int, check_s: float = QUIET_CHECK_S
) -> None:
    """Run a full collection once it is due and nothing runs; until cancelled.

    Every `check_s` it looks: due once `due_after` generation-1 collections have passed
    since the last full one, and taken when `quiet()` says nothing is running (`serve`: no
    run executing and no stream open; `worker`: no run executing).
    """
    while True:
        await asyncio.sleep(check_s)
        if not quiet() or gc.get_count()[2] < due_after:
            continue
        began = time.perf_counter()
        found = gc.collect()
        global _quiet_collections  # noqa: PLW0603 - this process's count, as gc keeps its own
        _quiet_collections += 1
        log.debug(
            "full collection while quiet: %d unreachable objects in %.1f ms",
            found,
            (time.perf_counter() - began) * 1e3,
        )
