"""Live fan-out: a run hands each new event straight to the listeners that are caught up."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Sequence
from typing import Final, Protocol

from research_service.events import Event

#: A run with more listeners than this reaches them in rounds of this many per turn of the event
#: loop, each handed in one write every event it has not had yet. All at once, a run followed by
#: 10,000 listeners held the loop for 140-160 ms per token (about 15 µs per listener, its
#: socket write) and 600 ms as its last events went out. A turn of a round takes a few ms,
#: about 12 when it ends 128 streams (the `done` cost about 95 µs per listener, measured
#: before a stream's last events and its end went out in one write), with every
#: other stream and request served between turns (bench/README.md, "One run, thousands of
#: listeners"). Up to this many listeners, an event reaches them all at once, as before.
FAN_OUT_PER_TURN: Final = 128


class Subscriber(Protocol):
    """A caught-up listener: it takes events without waiting, or asks to be let go."""

    after: int

    def deliver(self, event: Event, published: float) -> bool:
        """Take `event` (here since `published`) now, without waiting; False if it cannot."""
        ...

    def deliver_all(self, events: Sequence[Event], published: Sequence[float]) -> bool:
        """Take consecutive `events` (each here since its `published`) now, without waiting.

        All at once, in one write; False if it cannot take them all, and then it takes none.
        """
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

    A run with more than `FAN_OUT_PER_TURN` listeners reaches them in rounds: each turn of the
    loop hands the next `FAN_OUT_PER_TURN` every event they have not had yet, all at once (one
    socket write each), and events published meanwhile wait in the backlog for their turn (and
    for the next round, for those the round has passed). Each listener still gets every event
    once, in order, and the run still never waits.
    """

    __slots__ = (
        "_backlog",
        "_round",
        "_round_at",
        "_round_seq",
        "_subscribers",
        "_turn",
        "closed",
        "last_seq",
        "published",
    )

    def __init__(self) -> None:
        #: In the order they joined (a dict, not a set): rounds reach them in that order.
        self._subscribers: dict[Subscriber, None] = {}
        self.last_seq = 0
        self.closed = False
        #: When each event reached the hub (time.monotonic(), the event loop's clock), in seq
        #: order up to `last_seq`: where delivery lag is measured from. 8 bytes an event.
        self.published = array("d")
        #: A fan-out in rounds: the events not yet handed to every subscriber, in seq order.
        self._backlog: list[Event] = []
        #: The round's subscribers (those of its start), the next one's index, and the last
        #: seq every one of them has once the round is over.
        self._round: list[Subscriber] | None = None
        self._round_at = 0
        self._round_seq = 0
        self._turn: asyncio.Handle | None = None

    def published_at(self, seq: int) -> float | None:
        """When event `seq` reached this hub; None if it came before the hub saw any."""
        index = seq - self.last_seq + len(self.published) - 1
        return self.published[index] if 0 <= index < len(self.published) else None

    def subscribe(self, subscriber: Subscriber) -> bool:
        """Follow the run live from `subscriber.after`; False if it must read the log first."""
        if self.closed or self.last_seq != subscriber.after:
            return False
        self._subscribers[subscriber] = None
        return True

    @property
    def followed(self) -> bool:
        """Whether any listener follows the run through this hub now."""
        return bool(self._subscribers)

    @property
    def followers(self) -> int:
        """How many listeners follow the run through this hub now."""
        return len(self._subscribers)

    def close(self) -> None:
        """No event will come through this hub any more: let every subscriber go."""
        self.closed = True
        self._end_round()
        subscribers, self._subscribers = self._subscribers, {}
        for subscriber in subscribers:
            subscriber.release()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop following (the listener's task left, or was cancelled)."""
        self._subscribers.pop(subscriber, None)

    def publish(self, event: Event) -> None:
        """Hand `event` to every subscriber; release those that cannot take it or are done."""
        seq = self.last_seq = event.seq
        final = self.closed = event.is_final
        now = time.monotonic()
        self.published.append(now)
        if self._round is not None:
            self._backlog.append(event)  # a round under way hands it over in its turns
            return
        if not self._subscribers:
            return
        if len(self._subscribers) > FAN_OUT_PER_TURN:
            self._backlog.append(event)
            self._start_round()
            self._fan_out()
            return
        leaving: list[Subscriber] = []
        for subscriber in self._subscribers:
            if subscriber.after == seq - 1 and subscriber.deliver(event, now):
                subscriber.after = seq
                if final:
                    leaving.append(subscriber)
            else:
                leaving.append(subscriber)
        if leaving:
            self._let_go(leaving)

    def _start_round(self) -> None:
        self._round = list(self._subscribers)
        self._round_at = 0
        self._round_seq = self.last_seq

    def _end_round(self) -> None:
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        self._round = None
        self._backlog.clear()

    def _fan_out(self) -> None:
        """Hand the backlog to the round's next subscribers; the rest get it in later turns."""
        self._turn = None
        round_ = self._round
        if round_ is None:
            return
        backlog = self._backlog
        first = backlog[0].seq
        start = self._round_at
        end = self._round_at = min(start + FAN_OUT_PER_TURN, len(round_))
        subscribers = self._subscribers
        leaving: list[Subscriber] = []
        # Most subscribers of a turn lack the same events: those of one slice of the backlog.
        cut = -1
        events: list[Event] = []
        published: Sequence[float] = ()
        for index in range(start, end):
            subscriber = round_[index]
            if subscriber not in subscribers:
                continue  # it left since the round began (its task reads the log now)
            if subscriber.after < first - 1:
                leaving.append(subscriber)  # it missed an event: it reads the log instead
                continue
            if subscriber.after - first + 1 != cut:
                cut = subscriber.after - first + 1
                events = backlog[cut:]
                # The backlog ends with the last event published, as `published` does.
                published = self.published[len(self.published) - len(events) :]
            if not events:
                continue  # it joined since: it has them all
            if not subscriber.deliver_all(events, published):
                leaving.append(subscriber)
                continue
            subscriber.after = events[-1].seq
            if events[-1].is_final:
                leaving.append(subscriber)
        self._let_go(leaving)
        if end < len(round_):
            self._turn = asyncio.get_running_loop().call_soon(self._fan_out)
        elif self.last_seq > self._round_seq and self._subscribers:
            # Events came during the round: every subscriber has those up to the round's seq
            # (later ones joined at a later seq), and the next round hands over the rest.
            del backlog[: self._round_seq - first + 1]
            self._start_round()
            self._turn = asyncio.get_running_loop().call_soon(self._fan_out)
        else:
            self._round = None
            backlog.clear()

    def _let_go(self, leaving: list[Subscriber]) -> None:
        for subscriber in leaving:
            self._subscribers.pop(subscriber, None)
            subscriber.release()
