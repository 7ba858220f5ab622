"""How long to wait before trying a failed request again: the server's ask, else backoff.

Shared by the model's and the search engine's retry policies (llm_retry, search_retry).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Final

log = logging.getLogger(__name__)

INITIAL_WAIT_S: Final = 0.5
BACKOFF_FACTOR: Final = 2.0
# Each computed wait is shortened by up to this fraction, so clients that failed together
# do not all come back at the same instant (as openai-python does).
JITTER: Final = 0.25


def retry_after_s(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """The wait the server asked for, in seconds: `retry-after-ms`, then `Retry-After`.

    `Retry-After` may be seconds or an HTTP date; a date in the past means no wait (0).
    None when the headers ask for nothing or cannot be read.
    """
    if headers is None:
        return None
    for name, per_second in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / per_second
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        when = email.utils.mktime_tz(parsed)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


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
