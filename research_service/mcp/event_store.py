"""Resumable MCP streams whose notifications are rebuilt from the run's own events.

Over Streamable HTTP (the 2025-11-25 wire), each message on a `tools/call` stream gets an event
id; a client whose connection dropped reconnects with `Last-Event-ID` and is sent what it
missed. The SDK's example store keeps every message in memory, bounded, and forgets the
oldest. Here a progress notification is not kept at all: its event id is
`<stream>/<run id>:<seq>/<n>`, the run's own event id of the `phase` event it reports and how
many it has reported, and a replay reads the phase events after that one back from the
service (`GET /v1/runs/{id}/events` with `Last-Event-ID: <run id>:<seq>`), so a notification
can be replayed for as long as the run exists. Only the tool's final response is kept, with
its stream, until the session ends (DELETE, or the stream untouched for `STREAM_IDLE_S`, by
when the SDK has ended an idle session), and at most for the newest `MAX_STREAMS` calls.

The SDK keys a stream by its JSON-RPC request id alone and shares one store between sessions;
this store keys it by the caller's session as well (`callers.py`), and replays a stream only
to its own session, presenting the key the call was made with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final

from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types import JSONRPCMessage, JSONRPCNotification

from research_service.client.api import ServiceClient
from research_service.client.follow import Follower
from research_service.errors import ClientError
from research_service.mcp.callers import CALLER, current_session
from research_service.mcp.progress import progress_message

log = logging.getLogger(__name__)

PROGRESS: Final = "notifications/progress"
#: Calls whose streams are kept at most, over all sessions; the oldest go first.
MAX_STREAMS: Final = 1000
#: An ended call's stream unused for this long is forgotten: its session has ended by then,
#: DELETE or not (http.py gives the SDK this as its session idle timeout).
STREAM_IDLE_S: Final = 600.0


@dataclass
class _Stream:
    """What a tool call's stream has sent: its run, its progress token and count, its end."""

    run_id: str | None = None
    service: ServiceClient | None = None
    #: The bearer key the call came with (None: it sent none).
    key: str | None = None
    token: Any = None
    reported: int = 0
    #: The run's seq of the phase event the last progress notification stored reported.
    seq: int = 0
    #: The run's seq of each progress notification sent but not stored yet, by its step: the
    #: transport stores a notification after the call has gone on to its next phase events.
    sent: dict[int, int] = field(default_factory=dict)
    response: JSONRPCMessage | None = None
    #: A replay re-opened the stream: the priming event that follows is not a new call.
    resuming: bool = False


#: The step of the event that carries a stream's final response.
_RESPONSE: Final = -1

_Key = tuple[str | None, str]


def _event_id(stream_id: str, run_id: str | None, seq: int, step: int) -> str:
    return f"{stream_id}/{run_id or ''}:{seq}/{step}"


def _parse(event_id: str) -> tuple[str, int, int] | None:
    """(stream id, run seq, step) of an event id this store made; None for any other."""
    rest, _, step_text = event_id.rpartition("/")
    stream_id, _, run_event = rest.rpartition("/")
    _, _, seq_text = run_event.rpartition(":")
    if not (seq_text.isdigit() and seq_text.isascii()):
        return None
    if not (step_text == str(_RESPONSE) or (step_text.isdigit() and step_text.isascii())):
        return None
    return stream_id, int(seq_text), int(step_text)


class RunEventStore(EventStore):
    """The SDK's `EventStore`, backed by the service's event log of each call's run."""

    def __init__(self, *, max_streams: int = MAX_STREAMS, idle_s: float = STREAM_IDLE_S) -> None:
        # Least recently used first: each use moves a stream to the end.
        self._streams: dict[_Key, _Stream] = {}
        # The streams that hold their call's response, by when they were last used (oldest
        # first). A call still going is not forgotten for being quiet (a plan review waits).
        self._ended: dict[_Key, float] = {}
        self._max_streams = max_streams
        self._idle_s = idle_s

    def _stream(self, stream_id: str, *, new: bool = False) -> _Stream:
        """The stream `stream_id` of the current session; a fresh one when `new`."""
        key = (current_session(), stream_id)
        known = self._streams.pop(key, None)
        if new or known is None:
            self._ended.pop(key, None)
            known = _Stream()
        self._keep(key, known)
        return known

    def _known(self, key: _Key) -> _Stream | None:
        """The stream at `key` if there is one (now the most recently used)."""
        stream = self._streams.pop(key, None)
        if stream is not None:
            self._keep(key, stream)
        return stream

    def _keep(self, key: _Key, stream: _Stream) -> None:
        """Keep `stream` as the most recently used, and forget stale streams.

        Stale: beyond the newest `max_streams`, or ended and unused for `idle_s` (by then
        the SDK has ended its session, if the client did not).
        """
        now = time.monotonic()
        self._streams[key] = stream
        if stream.response is not None:
            self._ended.pop(key, None)
            self._ended[key] = now
        while len(self._streams) > self._max_streams:
            oldest = next(iter(self._streams))
            del self._streams[oldest]
            self._ended.pop(oldest, None)
        while self._ended and now - next(iter(self._ended.values())) >= self._idle_s:
            oldest = next(iter(self._ended))
            del self._ended[oldest]
            self._streams.pop(oldest, None)

    def bind(self, stream_id: str, run_id: str, service: ServiceClient, key: str | None) -> None:
        """The tool call on `stream_id` follows `run_id` (read back through `service`).

        The caller sent `key` (None: no key); only a caller with the same key may resume it.
        """
        stream = self._stream(stream_id, new=True)  # nothing of an earlier call stays
        stream.run_id, stream.service, stream.key = run_id, service, key

    def reporting(self, stream_id: str, step: int, seq: int) -> None:
        """Progress notification `step` on `stream_id` reports the run's event `seq`."""
        self._stream(stream_id).sent[step] = seq

    def session_ended(self, session: str) -> None:
        """Forget the streams of a session that has ended."""
        for key in [key for key in self._streams if key[0] == session]:
            del self._streams[key]
            self._ended.pop(key, None)

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        """Note the message (not keep it, but for the final response); return its id."""
        if message is None:  # the priming event, of a new call or of a resumed stream
            known = self._known((current_session(), stream_id))
            if known is not None and known.resuming:
                known.resuming = False
                return _event_id(stream_id, known.run_id, known.seq, known.reported)
            caller = CALLER.get()
            self._stream(stream_id, new=True).key = None if caller is None else caller.key
            return _event_id(stream_id, None, 0, 0)
        stream = self._stream(stream_id)
        if isinstance(message, JSONRPCNotification) and message.method == PROGRESS:
            params = message.params or {}
            stream.token = params.get("progressToken", stream.token)
            stream.reported = int(params.get("progress", stream.reported + 1))
            stream.seq = stream.sent.pop(stream.reported, stream.seq)
            for step in [step for step in stream.sent if step < stream.reported]:
                del stream.sent[step]  # never stored (the call was cut short)
            return _event_id(stream_id, stream.run_id, stream.seq, stream.reported)
        stream.response = message  # the call's response (or error): its stream's last message
        self._keep((current_session(), stream_id), stream)  # ended: forgotten once unused
        return _event_id(stream_id, stream.run_id, stream.seq, _RESPONSE)

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        """Send what followed `last_event_id` on its stream; the stream id, or None.

        Only the session the stream belongs to, presenting the key its call was made with,
        is sent anything.
        """
        parsed = _parse(last_event_id)
        if parsed is None:
            return None
        stream_id, seq, seen = parsed
        caller = CALLER.get()
        stream = self._known((current_session(), stream_id))
        if stream is None or caller is None or caller.key != stream.key:
            log.info("refused to resume stream %r: not a stream of this caller", stream_id[:64])
            return None
        stream.resuming = True
        if seen == _RESPONSE:
            return stream_id
        missed = stream.reported - seen
        if missed > 0 and stream.run_id is not None and stream.service is not None:
            phases = await self._phases(stream.service, stream.run_id, after=seq, count=missed)
            for step, (phase_seq, data) in enumerate(phases, start=seen + 1):
                notification = JSONRPCNotification(
                    jsonrpc="2.0",
                    method=PROGRESS,
                    params={
                        "progressToken": stream.token,
                        "progress": step,
                        "message": progress_message(data),
                    },
                )
                event_id = _event_id(stream_id, stream.run_id, phase_seq, step)
                await send_callback(EventMessage(notification, event_id))
        log.info(
            "resumed a stream after step %d: %d notifications rebuilt from run %s%s",
            seen,
            max(0, missed),
            stream.run_id,
            ", and its result" if stream.response is not None else "",
        )
        if stream.response is not None:
            await send_callback(
                EventMessage(
                    stream.response, _event_id(stream_id, stream.run_id, stream.seq, _RESPONSE)
                )
            )
        return stream_id

    @staticmethod
    async def _phases(
        service: ServiceClient, run_id: str, *, after: int, count: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """The run's first `count` phase events after its event `after`: (seq, data) each."""
        follower = Follower(
            service.session,
            service.url(f"v1/runs/{run_id}/events"),
            log.info,
            api_key=service.api_key,
            last_id=f"{run_id}:{after}",
        )
        phases: list[tuple[int, dict[str, Any]]] = []
        try:
            async for event in follower.events():
                if event.name == "phase":
                    phases.append((event.seq, event.data))
                    if len(phases) == count:
                        break
        except ClientError as exc:
            log.warning("could not read run %s back for a resumed stream: %s", run_id, exc)
        while len(phases) < count:  # the run is gone: say so rather than send nothing
            phases.append((after, {"phase": "unknown", "status": "(run no longer readable)"}))
        return phases
