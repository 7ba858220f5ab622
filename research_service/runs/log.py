"""The event-log interface every backend implements, and the maintenance durable ones add."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from research_service.errors import StoreUnavailable
from research_service.events import Event
from research_service.runs.models import RunRecord, RunTail


class EventLog(Protocol):
    """Append-only per-run event logs plus the run records they belong to.

    A run has exactly one writer (its task), which appends events with contiguous
    seq numbers starting at 1; any number of readers read after a seq and wait for more.
    """

    async def create_run(self, record: RunRecord) -> None:
        """Store a new run record; its log starts empty."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run's record, or None when there is no such run."""
        ...

    async def list_runs(
        self,
        *,
        limit: int,
        before: tuple[float, str] | None = None,
        owner: str | None = None,
        unfinished: bool = False,
    ) -> list[RunRecord]:
        """Up to `limit` records, newest first, strictly older than the `before` sort key.

        With `owner`, only the runs that owner created; without, every run. With
        `unfinished`, only the runs whose `done` is not stored yet (found by an index).
        """
        ...

    async def tails(self, run_ids: Sequence[str]) -> dict[str, RunTail]:
        """Each known run's event count and ending (cheap: never decodes a whole log)."""
        ...

    async def append(self, event: Event) -> None:
        """Append `event`; its seq must be the run's last seq + 1."""
        ...

    async def read(self, run_id: str, *, after: int, limit: int | None = None) -> list[Event]:
        """The run's stored events with seq > `after`, in order, at most `limit` of them."""
        ...

    async def wait(self, run_id: str, *, after: int, timeout: float) -> bool:
        """Wait until the run has an event with seq > `after`; False if `timeout` passed first."""
        ...

    async def close(self) -> None:
        """Release the backend's resources and wake every waiter."""
        ...


@runtime_checkable
class Prunable(Protocol):
    """A store that deletes finished runs past the retention limits: every run store."""

    async def prune(self, *, max_age_s: float | None, max_runs: int | None) -> int:
        """Delete finished runs older than `max_age_s` or beyond the newest `max_runs`.

        Runs not yet ended are never deleted. Returns how many went.
        """
        ...


@runtime_checkable
class StoreMaintenance(Prunable, Protocol):
    """What a durable store offers beside its EventLog; the app uses it where a store has it.

    A store that outlives its process ends the runs a stopped one left open, deletes runs
    past the retention limits and may keep the API keys beside the runs.
    """

    @property
    def write_failure(self) -> StoreUnavailable | None:
        """Why the store takes no writes now, or None while it does."""
        ...

    @property
    def keys_path(self) -> Path | None:
        """The SQLite file `--auth keys` keeps its API keys in (beside the runs), or None."""
        ...

    async def interrupted_runs(self) -> list[RunRecord]:
        """Stored runs without a `done` that this process is not running, oldest first."""
        ...
