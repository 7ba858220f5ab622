"""What the service counts as it works: plain numbers, cheap on the hot paths.

Incremented where things happen (the run manager, the stream handler, the listeners, the
counted providers) and read only when `GET /metrics` is scraped, which turns them into
Prometheus metrics.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

#: Upper bounds (s) of the phase duration histogram's buckets.
PHASE_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Upper bounds (s) of the event-loop lag histogram's buckets.
LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Upper bounds (s) of the provider call histograms: a local search takes milliseconds, a
#: long answer from a remote model minutes.
CALL_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Upper bounds (s) of the event delivery lag histogram: a listener that keeps pace is
#: written to within the coalescing millisecond; a backed-up one falls behind by seconds.
DELIVERY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


@dataclass(slots=True)
class Buckets:
    """A histogram's counts: observations per bucket (the last one: above every bound)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it), `+Inf` last, as Prometheus wants."""
        running, result = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            result.append((bound, running))
        return result


@dataclass(slots=True)
class CallStats:
    """One provider's calls of one kind: how many, retried and failed, and how long they took."""

    calls: int = 0
    #: Attempts sent again after a transient failure (each wait before one counts once).
    retries: int = 0
    #: Calls that ended with an error (after their retries).
    errors: int = 0
    #: Whole calls that ended (returned or failed): from the request to the last byte.
    seconds: Buckets = field(default_factory=lambda: Buckets(CALL_BUCKETS))
    #: Streamed calls only: from the request to the first piece of the answer.
    first_token: Buckets | None = None


@dataclass(slots=True)
class Stats:
    """The counts of one process since it started."""

    runs_created: int = 0
    #: (status, error code or "") → runs that ended so.
    runs_finished: Counter[tuple[str, str]] = field(default_factory=Counter)
    events_appended: int = 0
    events_delivered: int = 0
    open_streams: int = 0
    resumes: int = 0
    #: Listeners cut because their socket took no data for the write timeout.
    listeners_cut: int = 0
    #: Streams whose connection closed before their run's `done` (the client went away).
    listeners_dropped: int = 0
    #: HTTP status (429, 503) → answers refused so.
    refusals: Counter[int] = field(default_factory=Counter)
    #: Phase → how long completed phases took.
    phases: dict[str, Buckets] = field(default_factory=dict)
    #: How late a timer fires on the event loop: the loop's own lag.
    loop_lag: Buckets = field(default_factory=lambda: Buckets(LAG_BUCKETS))
    #: The longest of those since the service began serving: the worst stall seen.
    loop_lag_max: float = 0.0
    #: Bumped when serving begins: a sample that spans it measured start-up, not serving.
    loop_lag_epoch: int = 0
    #: (provider name, stage) → its calls.
    provider_calls: dict[tuple[str, str], CallStats] = field(default_factory=dict)
    #: From an event reaching the run's hub to its bytes written to a live listener's socket.
    delivery_lag: Buckets = field(default_factory=lambda: Buckets(DELIVERY_BUCKETS))
    #: The cluster's queue by state (unread, unacknowledged), as sampled for the last scrape;
    #: None outside a cluster, or when Redis did not answer it.
    queued: dict[str, int] | None = None
    #: Completion webhooks: attempt outcome (ok, failed) → attempts made here.
    webhook_attempts: Counter[str] = field(default_factory=Counter)
    #: Completion webhooks: final state (delivered, failed) → deliveries that ended here.
    webhooks_ended: Counter[str] = field(default_factory=Counter)

    def phase_done(self, phase: str, seconds: float) -> None:
        """A phase completed after `seconds`."""
        buckets = self.phases.get(phase)
        if buckets is None:
            buckets = self.phases[phase] = Buckets(PHASE_BUCKETS)
        buckets.observe(seconds)

    def calls(self, provider: str, stage: str, *, streamed: bool = False) -> CallStats:
        """The counts of `provider`'s `stage` calls (`streamed`: timed to the first token too)."""
        counts = self.provider_calls.get((provider, stage))
        if counts is None:
            counts = self.provider_calls[(provider, stage)] = CallStats()
        if streamed and counts.first_token is None:
            counts.first_token = Buckets(CALL_BUCKETS)
        return counts
