"""How often one key may sign in: each sign-in may become a sign-out the service keeps a day.

A signed-out session is remembered until its cookie would have expired (`sign_outs`), so a
key that signed in and out without end would grow that record without end. Each key may sign
in SIGN_INS_PER_MINUTE times a minute (a bucket that refills one every 60 / that seconds), which
bounds what one key adds to a day's sign-outs; per process, so a cluster's nodes each allow it.
"""

from __future__ import annotations

import math
import time
from typing import Final

from research_service.errors import TooManySignIns

#: How many sign-ins one key may make in a minute (all at once, or spread).
SIGN_INS_PER_MINUTE: Final = 60
_REFILL_PER_S: Final = SIGN_INS_PER_MINUTE / 60
#: Buckets kept before the full ones are dropped (a full bucket is the same as none).
_PRUNE_ABOVE: Final = 1024


class SignInLimit:
    """A bucket of sign-ins per key id."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key id → (sign-ins left, when)

    def take(self, key_id: str) -> None:
        """Count one sign-in of `key_id`; TooManySignIns when its minute's are used up."""
        now = time.monotonic()
        left, when = self._buckets.get(key_id, (SIGN_INS_PER_MINUTE, now))
        left = min(SIGN_INS_PER_MINUTE, left + (now - when) * _REFILL_PER_S)
        if left < 1:
            wait = math.ceil((1 - left) / _REFILL_PER_S)
            raise TooManySignIns(
                f"this key signed in {SIGN_INS_PER_MINUTE} times within a minute; a session "
                f"lasts (--session-ttl-s), so keep its cookie instead of signing in again, or "
                f"retry in {wait} s",
                retry_after=wait,
            )
        if len(self._buckets) > _PRUNE_ABOVE:
            self._prune(now)
        self._buckets[key_id] = (left - 1, now)

    def _prune(self, now: float) -> None:
        full_after = SIGN_INS_PER_MINUTE / _REFILL_PER_S
        self._buckets = {
            key_id: bucket
            for key_id, bucket in self._buckets.items()
            if now - bucket[1] < full_after
        }
