"""A node's background tasks: repeating work, and stopping even when a cancel is swallowed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from research_service.cluster.redis_link import ERRORS
from research_service.errors import StoreUnavailable
from research_service.outage import Outage

log = logging.getLogger(__name__)

#: How long a cancelled task gets to end, each time it is cancelled.
STOP_TIMEOUT_S: Final = 2.0
#: How often a task that ignored its cancel is cancelled again.
ATTEMPTS: Final = 3


async def stop(*tasks: asyncio.Task[None] | None) -> None:
    """Cancel the tasks and wait until they end.

    A cancel that arrives while redis-py waits on a reply can be swallowed by it; the task
    then goes on to its next wait. So a task still running is cancelled again (never waited
    for without bound: stopping a node must not hang on one of its tasks).
    """
    pending = {task for task in tasks if task is not None and not task.done()}
    for _ in range(ATTEMPTS):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_TIMEOUT_S)
    for task in pending:
        log.warning("task %s did not stop when cancelled; leaving it", task.get_name())


async def every(interval_s: float, work: Callable[[], Awaitable[None]], *, what: str) -> None:
    """Do `work` every `interval_s` seconds, forever; a failure is logged and tried again."""
    outage = Outage(f"{what} failed")
    while True:
        await asyncio.sleep(interval_s)
        try:
            await work()
            outage.ok()
        except (*ERRORS, StoreUnavailable) as exc:
            outage.failed(exc)
        except Exception:
            log.exception("%s failed unexpectedly; will try again", what)
