"""Ending runs nobody executes any more: `error` with why, then `done` failed, in their logs."""

from __future__ import annotations

import logging

from research_service.events import Event, done_payload
from research_service.runs.log import EventLog
from research_service.runs.models import RunRecord
from research_service.runs.state import RunState

log = logging.getLogger(__name__)


async def end_open_runs(
    events_log: EventLog, records: list[RunRecord], *, code: str, message: str
) -> None:
    """Append `error` `code` and `done` failed to each run, after its last event."""
    for record in records:
        events = await events_log.read(record.id, after=0)
        state = RunState.fold(events)
        now = state.last_t_ms
        error = {"code": code, "message": message}
        done = done_payload(
            status="failed",
            answer=state.answer,
            sources=state.sources,
            timings_ms=state.timings(now_ms=now),
            error=error,
            usage=None,
            truncated=False,
        )
        for name, data in (("error", {**error, "phase": state.phase}), ("done", done)):
            event = Event.create(record.id, state.event_count + 1, name, data, t_ms=now)
            state.apply(event, data)
            await events_log.append(event)
        log.warning("run %s ended as %s; marked failed", record.id, code)
