"""A run in brief: what `GET /v1/runs` lists for each run, of bounded size whatever the run."""

from __future__ import annotations

from typing import Any

from research_service.runs.models import RunEnd, RunRecord, RunTail, iso_time
from research_service.runs.state import RunState


def tail_of_state(state: RunState) -> RunTail:
    """The tail of a run whose state is folded (a live or recently finished run)."""
    if not state.finished:
        return RunTail(state.event_count, awaiting=state.awaiting)
    code = state.error.get("code") if state.error else None
    # The done's own time, as the store's tails have it.
    end = RunEnd(state.status, code, len(state.sources), state.last_t_ms)
    return RunTail(state.event_count, end)


def summary(
    record: RunRecord, tail: RunTail, *, sources_so_far: int | None = None
) -> dict[str, Any]:
    """A run's listing entry: no answer and no sources (its snapshot has those).

    Its size is bounded by the question's (at most 2,000 characters).
    """
    end = tail.end
    status = end.status if end is not None else _unfinished_status(tail)
    return {
        "id": record.id,
        "status": status,
        "question": record.question,
        "options": record.options.to_dict(),
        "created_at": record.created_iso,
        "finished_at": None if end is None else iso_time(record.created_at + end.t_ms / 1000),
        "error_code": None if end is None else end.error_code,
        "event_count": tail.event_count,
        "source_count": sources_so_far if end is None else end.source_count,
        "awaiting": tail.awaiting,
        "url": f"/v1/runs/{record.id}",
        "events_url": f"/v1/runs/{record.id}/events",
    }


def _unfinished_status(tail: RunTail) -> str:
    return "queued" if tail.event_count == 0 else "running"
