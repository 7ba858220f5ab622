"""Live fan-out: a run hands each new event straight to the listeners that are caught up."""

from __future__ import annotations

import time
from array import array
from typing import Protocol

from research_service.events import Event


class Subscriber(Protocol):
    """A caught-up listener: it takes events without waiting, or asks to be let go."""

    after: int

    def deliver(self, event: Event, published: float) -> bool:
        """Take `event` (here since `published`) now, without waiting; False if it cannot."""
        ...

    def release(self) -> None:
        """The hub let go of this subscriber: its own task takes over again."""
        ...


class Hub:
    """The caught-up listeners of one live run.

    The run's task calls `publish` after each append, so a listener that keeps pace costs
    one socket write per event and no task switch. Whoever cannot take an event at once
    (its socket is backed up, or it missed one) is released to its own task, which catches
    up from the event log at its own pace: the run never waits on a listener.
    """

    __slots__ = ("_subscribers", "closed", "last_seq", "published")

    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self.last_seq = 0
        self.closed = False
        #: When each event reached the hub (time.monotonic(), the event loop's clock), in seq
        #: order up to `last_seq`: where delivery lag is measured from. 8 bytes an event.
        self.published = array("d")

    def published_at(self, seq: int) -> float | None:
        """When event `seq` reached this hub; None if it came before the hub saw any."""
        index = seq - self.last_seq + len(self.published) - 1
        return self.published[index] if 0 <= index < len(self.published) else None

    def subscribe(self, subscriber: Subscriber) -> bool:
        """Follow the run live from `subscriber.after`; False if it must read the log first."""
        if self.closed or self.last_seq != subscriber.after:
            return False
        self._subscribers.add(subscriber)
        return True

    @property
    def followed(self) -> bool:
        """Whether any listener follows the run through this hub now."""
        return bool(self._subscribers)

    def close(self) -> None:
        """No event will come through this hub any more: let every subscriber go."""
        self.closed = True
        subscribers, self._subscribers = self._subscribers, set()
        for subscriber in subscribers:
            subscriber.release()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop following (the listener's task left, or was cancelled)."""
        self._subscribers.discard(subscriber)

    def publish(self, event: Event) -> None:
        """Hand `event` to every subscriber; release those that cannot take it or are done."""
        seq = self.last_seq = event.seq
        final = self.closed = event.is_final
        now = time.monotonic()
        self.published.append(now)
        if not self._subscribers:
            return
        leaving: list[Subscriber] = []
        for subscriber in self._subscribers:
            if subscriber.after == seq - 1 and subscriber.deliver(event, now):
                subscriber.after = seq
                if final:
                    leaving.append(subscriber)
            else:
                leaving.append(subscriber)
        for subscriber in leaving:
            self._subscribers.discard(subscriber)
            subscriber.release()
