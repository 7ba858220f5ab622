"""How a run's log ends, read without reading the log whole; what a run is, from the core."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from research_service.events import Event
from research_service.records import (
    BREADTH_RANGE,
    DEFAULT_BREADTH,
    DEFAULT_DEPTH,
    DEFAULT_MAX_SOURCES,
    DEPTH_RANGE,
    MAX_SOURCES_RANGE,
    MAX_TOKENS_RANGE,
    RunOptions,
    RunRecord,
    iso_time,
    new_run_id,
)

# What a run is moved to the core (records.py); the run store code still finds it here.
__all__ = [
    "BREADTH_RANGE",
    "DEFAULT_BREADTH",
    "DEFAULT_DEPTH",
    "DEFAULT_MAX_SOURCES",
    "DEPTH_RANGE",
    "MAX_SOURCES_RANGE",
    "MAX_TOKENS_RANGE",
    "RunEnd",
    "RunOptions",
    "RunRecord",
    "RunTail",
    "iso_time",
    "new_run_id",
    "tail_of",
]


@dataclass(frozen=True, slots=True)
class RunEnd:
    """What a run's `done` says, in brief."""

    status: str
    error_code: str | None
    source_count: int
    #: When the run ended, in ms after it was created.
    t_ms: int

    @classmethod
    def from_done(cls, data: dict[str, Any], *, t_ms: int) -> RunEnd:
        """The brief of a `done` payload."""
        error = data.get("error") or {}
        return cls(str(data["status"]), error.get("code"), len(data.get("sources") or ()), t_ms)


@dataclass(frozen=True, slots=True)
class RunTail:
    """How far a run's log goes and how it ended, without reading the log whole."""

    event_count: int
    end: RunEnd | None = None
    #: What the run waits for ("plan_review"), when its last event asks for something.
    awaiting: str | None = None


#: The bytes that mark a `planning` `review` event (the run then waits for its review).
REVIEW_MARK: Final = b'"status":"review"'


def tail_of(events: Sequence[tuple[str, int, str, int, bytes]]) -> RunTail:
    """The tail of a run whose events (stored rows, in order) are at hand."""
    if not events or events[-1][2] != "done":
        last = events[-1] if events else None
        waiting = last is not None and last[2] == "phase" and REVIEW_MARK in last[4]
        return RunTail(len(events), awaiting="plan_review" if waiting else None)
    done = Event._make(events[-1])
    return RunTail(len(events), RunEnd.from_done(done.data, t_ms=done.t_ms))
