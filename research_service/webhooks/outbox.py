"""The deliveries a run's end owes, kept until each is delivered or given up: the outbox.

A delivery is stored when its run is created, so it survives the process: whichever process
runs next (or any node of a cluster) sends it once the run has ended. Each store keeps it
beside the runs (SQLite, PostgreSQL); the memory store keeps it as long as it keeps runs.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol, TypeAlias

State: TypeAlias = Literal["pending", "delivered", "failed"]
#: How many deliveries one look at the outbox hands out.
BATCH: Final = 200
#: Ended deliveries the memory outbox remembers (for snapshots), the oldest forgotten first.
MEMORY_ENDED_KEPT: Final = 10_000


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


class Outbox(Protocol):
    """Where deliveries wait. `claim` makes one process the sender, for a while."""

    async def add(self, deliveries: Sequence[Delivery]) -> None:
        """Keep new deliveries (their runs exist)."""
        ...

    async def due(self, *, now: float, limit: int = BATCH) -> list[Delivery]:
        """Pending deliveries due by `now` that no process holds, oldest first.

        The SQL stores hand out only those whose run has ended; the memory store all of them
        (the dispatcher skips a run that goes on).
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


class MemoryOutbox:
    """The outbox of `--store memory`: gone with the process, as its runs are."""

    def __init__(self) -> None:
        self._deliveries: dict[str, Delivery] = {}
        self._held: dict[str, float] = {}
        self._ended: deque[str] = deque()

    async def add(self, deliveries: Sequence[Delivery]) -> None:
        """Keep new deliveries."""
        for delivery in deliveries:
            self._deliveries[delivery.id] = delivery

    async def due(self, *, now: float, limit: int = BATCH) -> list[Delivery]:
        """Pending, due and not held, oldest first."""
        found = [
            d
            for d in self._deliveries.values()
            if d.state == "pending" and d.next_at <= now and self._held.get(d.id, 0.0) <= now
        ]
        return sorted(found, key=lambda d: (d.next_at, d.created_at))[:limit]

    async def claim(self, delivery_id: str, *, now: float, until: float) -> bool:
        """Hold it unless held."""
        if self._held.get(delivery_id, 0.0) > now:
            return False
        self._held[delivery_id] = until
        return True

    async def save(self, delivery: Delivery, *, hold_until: float | None = None) -> None:
        """Record the outcome; beyond MEMORY_ENDED_KEPT ended ones, forget the oldest."""
        self._deliveries[delivery.id] = replace(delivery)
        if hold_until is None:
            self._held.pop(delivery.id, None)
        else:
            self._held[delivery.id] = hold_until
        if delivery.state != "pending":
            self._ended.append(delivery.id)
            while len(self._ended) > MEMORY_ENDED_KEPT:
                self._deliveries.pop(self._ended.popleft(), None)

    async def release(self) -> None:
        """Drop every hold."""
        self._held.clear()

    async def pending(self) -> bool:
        """Whether any delivery is pending."""
        return any(d.state == "pending" for d in self._deliveries.values())

    async def of_run(self, run_id: str) -> list[Delivery]:
        """The run's deliveries."""
        found = [d for d in self._deliveries.values() if d.run_id == run_id]
        return sorted(found, key=lambda d: d.created_at)
