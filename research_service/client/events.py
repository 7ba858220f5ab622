"""A run's events as the client receives them, and what the stream contract says of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from research_service.client.sse import Message
from research_service.errors import NotAnEventStream
from research_service.events import CRASH_ENDINGS, EVENT_NAMES, parse_event_id


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One event of a run: its id `<run_id>:<seq>`, name and decoded data."""

    id: str
    run_id: str
    seq: int
    name: str
    data: dict[str, Any]

    @property
    def is_final(self) -> bool:
        return self.name == "done"

    @property
    def ends_after_a_crash(self) -> bool:
        """The `error` or `done` of an ending written after the process running it stopped."""
        if self.name == "error":
            return self.data.get("code") in CRASH_ENDINGS
        error = self.data.get("error") if self.name == "done" else None
        return isinstance(error, dict) and error.get("code") in CRASH_ENDINGS

    def to_json(self) -> dict[str, Any]:
        """The `--json` line of this event."""
        return {"id": self.id, "event": self.name, "data": self.data}


def run_event(message: Message) -> RunEvent:
    """Check an SSE message against the contract and decode it."""
    parsed = parse_event_id(message.id)
    if parsed is None or message.event not in EVENT_NAMES:
        raise NotAnEventStream(
            f"received an event {message.event!r} with id {message.id!r}, which a "
            "research-service stream never sends; check that the URL is a research-service "
            "events URL (/v1/runs/ID/events)"
        )
    try:
        data = json.loads(message.data)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise NotAnEventStream(f"event {message.id} has data that is not a JSON object")
    run_id, seq = parsed
    return RunEvent(id=message.id, run_id=run_id, seq=seq, name=message.event, data=data)
