"""How long to wait before trying a failed request again: the server's ask, else backoff.

Shared by the model's and the search engine's retry policies (llm_retry, search_retry); the
server's ask is read by `research_service.net.retry_after_s`.
"""

from __future__ import annotations

import logging
import random
from typing import Final

log = logging.getLogger(__name__)

INITIAL_WAIT_S: Final = 0.5
BACKOFF_FACTOR: Final = 2.0
# Each computed wait is shortened by up to this fraction, so clients that failed together
# do not all come back at the same instant (as openai-python does).
JITTER: Final = 0.25


def backoff_s(attempt: int, *, max_wait_s: float, jitter: float | None = None) -> float:
    """Exponential backoff after failed attempt `attempt` (1-based), capped, minus jitter.

    `jitter` in [0, 1) picks where in the jitter range the wait falls (random by default).
    """
    base = min(INITIAL_WAIT_S * BACKOFF_FACTOR ** min(attempt - 1, 64), max_wait_s)
    share = random.random() if jitter is None else jitter
    return max(0.0, base * (1 - JITTER * share))


def wait_s(
    asked: float | None, attempt: int, *, max_wait_s: float, jitter: float | None = None
) -> float:
    """The wait before the attempt after `attempt`: what the server `asked` (capped), or backoff."""
    if asked is not None:
        wait = min(asked, max_wait_s)
        log.debug(
            "waiting %.3fs as the server asked (%.3fs, capped at %.3fs)", wait, asked, max_wait_s
        )
        return wait
    wait = backoff_s(attempt, max_wait_s=max_wait_s, jitter=jitter)
    log.debug("waiting %.3fs (backoff after attempt %i)", wait, attempt)
    return wait
