"""The deliveries a run's end owes, kept until each is delivered or given up: the outbox.

A delivery is stored when its run is created, so it survives the process: whichever process
runs next (or any node of a cluster) sends it once the run has ended. Each store keeps it
beside the runs (SQLite, PostgreSQL); the memory store keeps it as long as it keeps runs.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeAlias

State: TypeAlias = Literal["pending", "delivered", "failed"]
#: How many deliveries one look at the outbox hands out.
BATCH: Final = 200


def new_delivery_id() -> str:
    """A delivery's id, sent as `webhook-id` on every attempt (the receiver's dedup key)."""
    return "msg_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification owed to one URL for one run."""

    id: str
    run_id: str
    url: str
    #: Whose secret signs it (signing.SERVER_SCOPE or signing.key_scope(...)).
    scope: str
    #: The service's address as the creating request saw it: the links are made from it.
    base_url: str
    created_at: float = field(default_factory=time.time)
    state: State = "pending"
    attempts: int = 0
    #: Not tried before this time (Unix seconds).
    next_at: float = 0.0
    #: When it was first tried: the day of retries counts from here.
    first_tried_at: float | None = None
    last_error: str | None = None

    def public(self) -> dict[str, object]:
        """What a run's snapshot shows of it."""
        return {
            "url": self.url,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
        }


def in_turns(found: Sequence[Sequence[Delivery]], limit: int) -> list[Delivery]:
    """Each scope's due deliveries (each oldest first) taking turns, at most `limit`.

    Every scope's first, then every scope's second, and so on; within a turn, the soonest due
    (`next_at`), then the oldest, first. The SQL outboxes order their rows the same way.
    """
    ranked = [(turn, d) for mine in found for turn, d in enumerate(mine)]
    ranked.sort(key=lambda pair: (pair[0], pair[1].next_at, pair[1].created_at, pair[1].id))
    return [d for _, d in ranked[:limit]]


class Outbox(Protocol):
    """Where deliveries wait. `claim` makes one process the sender, for a while."""

    async def add(self, deliveries: Sequence[Delivery]) -> None:
        """Keep new deliveries (their runs exist)."""
        ...

    async def due(self, *, now: float, limit: int = BATCH) -> list[Delivery]:
        """Pending deliveries due by `now` that no process holds and whose run has ended.

        The scopes (each key's deliveries, and the server's) take turns (`in_turns`), so a
        key with thousands due never crowds the others out of a look at the outbox.
        """
        ...

    async def claim(self, delivery_id: str, *, now: float, until: float) -> bool:
        """Hold the delivery until `until`, unless another process holds it now."""
        ...

    async def save(self, delivery: Delivery, *, hold_until: float | None = None) -> None:
        """Record an attempt's outcome (state, attempts, next_at, error) and the hold."""
        ...

    async def release(self) -> None:
        """Drop every hold (a single process starting: nobody else sends)."""
        ...

    async def pending(self) -> bool:
        """Whether any delivery is still pending (its run going on, or between attempts)."""
        ...

    async def of_run(self, run_id: str) -> list[Delivery]:
        """The run's deliveries, in the order they were made."""
        ...
