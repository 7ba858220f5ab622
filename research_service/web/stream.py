"""The SSE listener: replay a run's log after a position, then follow it live."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Final

from aiohttp import web

from research_service.errors import InvalidEventId
from research_service.events import PING, Event, parse_event_id, retry_field
from research_service.runs.log import EventLog
from research_service.settings import Settings
from research_service.web.keys import MANAGER, SETTINGS

log = logging.getLogger(__name__)

LAST_EVENT_ID_HEADER: Final = "Last-Event-ID"
LAST_EVENT_ID_PARAM: Final = "last_event_id"
#: A write that cannot drain within the write timeout cuts the listener; bounding each write
#: makes that timeout mean "the socket took no data", not "a large backlog took long".
MAX_WRITE_BYTES: Final = 256 * 1024
STREAM_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}


def requested_position(request: web.Request) -> str | None:
    """The raw Last-Event-ID, from the header or (for clients that cannot set it) the query."""
    value = request.headers.get(LAST_EVENT_ID_HEADER)
    if value is None or not value.strip():
        value = request.query.get(LAST_EVENT_ID_PARAM)
    return value if value and value.strip() else None


def split_event_id(raw: str) -> tuple[str, int]:
    """The run id and seq of a Last-Event-ID; InvalidEventId when it is malformed."""
    parsed = parse_event_id(raw)
    if parsed is None:
        raise InvalidEventId(
            f"Last-Event-ID {raw!r} is malformed; it must be an event id `<run_id>:<seq>` "
            "from this run's stream",
            field=LAST_EVENT_ID_HEADER,
        )
    return parsed


async def resume_position(raw: str | None, *, run_id: str, log: EventLog) -> tuple[int, bool]:
    """The seq a listener has already seen, and whether that event was the run's `done`."""
    if raw is None:
        return 0, False
    owner, seq = split_event_id(raw)
    if owner != run_id:
        raise InvalidEventId(
            f"Last-Event-ID {raw!r} belongs to run {owner}, not {run_id}",
            field=LAST_EVENT_ID_HEADER,
        )
    if seq == 0:
        return 0, False
    tail = await log.read(run_id, after=seq - 1, limit=1)
    if not tail:
        raise InvalidEventId(
            f"Last-Event-ID {raw!r} was never issued by run {run_id}",
            field=LAST_EVENT_ID_HEADER,
        )
    return seq, tail[0].is_final


def _batches(events: list[Event]) -> Iterator[list[Event]]:
    """Split pending events into batches of about MAX_WRITE_BYTES each."""
    if len(events) == 1:
        yield events
        return
    batch: list[Event] = []
    size = 0
    for event in events:
        batch.append(event)
        size += len(event.wire)
        if size >= MAX_WRITE_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _Listener:
    """Writes one run's events to one client, in its own task, at its own pace."""

    def __init__(self, request: web.Request, response: web.StreamResponse, settings: Settings):
        self.request = request
        self.response = response
        self.write_timeout = settings.write_timeout_s

    async def write(self, data: bytes) -> bool:
        """Write `data`; False (and the connection is cut) if the client stopped reading."""
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.response.write(data)
        except TimeoutError:
            log.info("cut a listener that took no data for %g s", self.write_timeout)
            if self.request.transport is not None:
                self.request.transport.abort()
            return False
        except (ConnectionError, RuntimeError):
            # The peer went away (aiohttp raises ClientConnectionResetError or, after EOF,
            # RuntimeError); nothing to clean up beyond leaving.
            return False
        return True


async def stream(
    request: web.Request, *, run_id: str, after: int, ended: bool
) -> web.StreamResponse:
    """Serve a run's events after seq `after`, following the run until its `done`."""
    manager = request.app[MANAGER]
    settings = request.app[SETTINGS]
    events_log = manager.log
    if ended:
        # The listener has everything: 204 makes a browser's EventSource stop reconnecting.
        return web.Response(status=204)
    response = web.StreamResponse(status=200, headers=STREAM_HEADERS)
    await response.prepare(request)
    listener = _Listener(request, response, settings)
    manager.listener_joined(run_id)
    try:
        if not await listener.write(retry_field(settings.retry_ms)):
            return response
        while True:
            events = await events_log.read(run_id, after=after)
            if events:
                # Events are encoded once at append time; what is pending goes out in as few
                # writes as possible, each small enough that "no progress" is detectable.
                for batch in _batches(events):
                    if not await listener.write(b"".join(e.wire for e in batch)):
                        return response
                after = events[-1].seq
                if events[-1].is_final:
                    break
                continue
            quiet = not await events_log.wait(run_id, after=after, timeout=settings.heartbeat_s)
            if quiet and not await listener.write(PING):
                return response
    finally:
        manager.listener_left(run_id)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response
