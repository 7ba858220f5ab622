"""A failure a loop retries, said once as it starts, now and then while it lasts, and as it ends.

Each of a node's loops that talks to Redis (or the webhook dispatcher to its outbox) retries
every fraction of a second while it is down: a warning per retry was about ten lines a second,
against the one line each an expected condition gets (README).
"""

from __future__ import annotations

import logging
import time
from typing import Final

log = logging.getLogger(__name__)

#: How often a failure that goes on is said again.
REPEAT_S: Final = 60.0


class Outage:
    """One loop's failing spell: `failed` after each failed attempt, `ok` after each success."""

    __slots__ = ("_failures", "_said", "_since", "what")

    def __init__(self, what: str) -> None:
        #: What fails, as a log line says it: "cannot read the run queue".
        self.what = what
        self._since: float | None = None
        self._said = 0.0
        self._failures = 0

    def failed(self, exc: BaseException) -> None:
        """An attempt failed: said if it is the spell's first, or the last said is old."""
        now = time.monotonic()
        self._failures += 1
        if self._since is None:
            self._since = self._said = now
            log.warning("%s (%s); retrying", self.what, exc)
        elif now - self._said >= REPEAT_S:
            self._said = now
            log.warning(
                "%s for %.0f s now, %d attempts (%s); retrying",
                self.what,
                now - self._since,
                self._failures,
                exc,
            )

    def ok(self) -> None:
        """An attempt succeeded: a spell of failures, if one was going on, is over."""
        if self._since is not None:
            log.warning(
                "%s: works again after %.0f s and %d failed attempts",
                self.what,
                time.monotonic() - self._since,
                self._failures,
            )
            self._since, self._failures = None, 0
