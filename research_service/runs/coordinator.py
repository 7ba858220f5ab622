"""What the run manager asks of a cluster: runs shared by many processes (cluster mode)."""

from __future__ import annotations

from typing import NamedTuple, Protocol

from research_service.pipeline.review import Decision
from research_service.runs.hub import Hub
from research_service.runs.models import RunRecord


class Followers(NamedTuple):
    """A run's listeners in other processes, and how long ago the last of them left."""

    listeners: int
    #: Seconds since a listener elsewhere last left (None: none ever did, or not known).
    quiet_s: float | None = None


class Coordinator(Protocol):
    """The cluster behind a RunManager; without one, every run lives in its own process.

    Runs created through it are stored and queued for whichever executor takes them (maybe
    this process), so the manager only executes the runs the cluster hands it; everything it
    does not execute (cancel, live events, listener counts) goes through the coordinator.
    """

    async def submit(self, record: RunRecord, *, limit: int, owner_limit: int | None) -> None:
        """Store and queue a new run; TooManyRuns if `limit` runs are active cluster-wide.

        Also when its owner has `owner_limit` runs active cluster-wide (None: no such limit).
        """
        ...

    async def cancel(self, run_id: str, *, code: str, message: str) -> bool:
        """Stop a run executing anywhere (within 1 s); False when it had already finished."""
        ...

    async def decide_plan(
        self, run_id: str, decision: Decision, *, round_number: int | None = None
    ) -> int:
        """Deliver a plan review's decision to the run's executor; the round it decided.

        ReviewRefused when the run waits for no such decision (the first decision wins), or
        when `round_number` is given and is not the round open.
        """
        ...

    def hub(self, run_id: str) -> Hub | None:
        """The live fan-out in this process of a run executing elsewhere, if it is followed."""
        ...

    def listener_joined(self, run_id: str) -> None:
        """A listener of a run executing elsewhere joined here (counted cluster-wide)."""
        ...

    def listener_left(self, run_id: str) -> None:
        """A listener of a run executing elsewhere left here."""
        ...

    async def listeners_elsewhere(self, run_id: str) -> Followers:
        """The run's listeners in other processes (the abandon rule's count)."""
        ...

    def run_started(self, record: RunRecord) -> None:
        """The run began executing in this process."""
        ...

    def run_ended(self, run_id: str) -> None:
        """The run executing in this process has ended (its done is stored, or never will be)."""
        ...
