"""Resumable MCP streams whose notifications are rebuilt from the run's own events.

Over Streamable HTTP, each message on a `tools/call` stream gets an event id; a client whose
connection dropped reconnects with `Last-Event-ID` and is sent what it missed. The SDK's
example store keeps every message in memory, bounded, and forgets the oldest. Here a progress
notification is not kept at all: its event id names the run and the count of `phase` events
it reports (`[stream, run id, n]`), and a replay reads those phase events back from the
service (the run's own event log, `GET /v1/runs/{id}/events`), so a notification can be
replayed for as long as the run exists. Only the tool's final response is kept, with its
stream, until the session ends.

The SDK keys streams by the JSON-RPC request id; two sessions calling with the same id at
once share a stream key (an SDK limitation: `store_event` is not told the session).
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types import JSONRPCMessage, JSONRPCNotification

from research_service.client.api import ServiceClient
from research_service.client.follow import Follower
from research_service.errors import ClientError
from research_service.mcp.progress import progress_message

log = logging.getLogger(__name__)

PROGRESS: str = "notifications/progress"


@dataclass
class _Stream:
    """What a tool call's stream has sent: its run, its progress token and count, its end."""

    run_id: str | None = None
    service: ServiceClient | None = None
    token: Any = None
    reported: int = 0
    response: JSONRPCMessage | None = None


def _event_id(stream_id: str, run_id: str | None, step: int) -> str:
    raw = json.dumps([stream_id, run_id, step], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse(event_id: str) -> tuple[str, str | None, int] | None:
    try:
        raw = base64.urlsafe_b64decode(event_id + "=" * (-len(event_id) % 4))
        stream_id, run_id, step = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(stream_id, str) or not isinstance(step, int):
        return None
    return stream_id, run_id if isinstance(run_id, str) else None, step


#: The step of the event that carries a stream's final response.
_RESPONSE = -1


class RunEventStore(EventStore):
    """The SDK's `EventStore`, backed by the service's event log of each call's run."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def bind(self, stream_id: str, run_id: str, service: ServiceClient) -> None:
        """The tool call on `stream_id` follows `run_id` (read back through `service`)."""
        stream = self._streams.setdefault(stream_id, _Stream())
        stream.run_id, stream.service = run_id, service

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        """Note the message (not keep it, but for the final response); return its id."""
        stream = self._streams.setdefault(stream_id, _Stream())
        if isinstance(message, JSONRPCNotification) and message.method == PROGRESS:
            params = message.params or {}
            stream.token = params.get("progressToken", stream.token)
            stream.reported = int(params.get("progress", stream.reported + 1))
            return _event_id(stream_id, stream.run_id, stream.reported)
        if message is not None:  # the call's response (or error): its stream's last message
            stream.response = message
            return _event_id(stream_id, stream.run_id, _RESPONSE)
        return _event_id(stream_id, stream.run_id, 0)  # the priming event: nothing sent yet

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        """Send what followed `last_event_id` on its stream; the stream id, or None."""
        parsed = _parse(last_event_id)
        if parsed is None:
            return None
        stream_id, _, seen = parsed
        stream = self._streams.get(stream_id)
        if stream is None or seen == _RESPONSE:
            return None if stream is None else stream_id
        missed = stream.reported - seen
        if missed > 0 and stream.run_id is not None and stream.service is not None:
            phases = await self._phases(stream.service, stream.run_id, count=stream.reported)
            for step in range(seen + 1, stream.reported + 1):
                notification = JSONRPCNotification(
                    jsonrpc="2.0",
                    method=PROGRESS,
                    params={
                        "progressToken": stream.token,
                        "progress": step,
                        "message": progress_message(phases[step - 1]),
                    },
                )
                await send_callback(
                    EventMessage(notification, _event_id(stream_id, stream.run_id, step))
                )
        log.info(
            "resumed a stream after step %d: %d notifications rebuilt from run %s%s",
            seen,
            max(0, missed),
            stream.run_id,
            ", and its result" if stream.response is not None else "",
        )
        if stream.response is not None:
            await send_callback(
                EventMessage(stream.response, _event_id(stream_id, stream.run_id, _RESPONSE))
            )
        return stream_id

    @staticmethod
    async def _phases(service: ServiceClient, run_id: str, *, count: int) -> list[dict[str, Any]]:
        """The run's first `count` phase events' data, read from its stored events."""
        follower = Follower(
            service.session,
            service.url(f"v1/runs/{run_id}/events"),
            log.info,
            api_key=service.api_key,
            last_id=f"{run_id}:0",
        )
        phases: list[dict[str, Any]] = []
        try:
            async for event in follower.events():
                if event.name == "phase":
                    phases.append(event.data)
                    if len(phases) == count:
                        break
        except ClientError as exc:
            log.warning("could not read run %s back for a resumed stream: %s", run_id, exc)
        while len(phases) < count:  # the run is gone: say so rather than send nothing
            phases.append({"phase": "unknown", "status": "(run no longer readable)"})
        return phases
